"""`insightloop insights ...` on a real run directory (hashing embedder, so no model loads)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from insightloop.apps.cli.main import app
from insightloop.core.config import MemoryConfig
from insightloop.core.task import Task
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.store import MemoryStore
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    with MemoryStore.open(tmp_path / "run", HashingEmbedder(), MemoryConfig()) as store:
        a, _ = store.add_insight("add the digits from right to left [carefully]", status="active", model="m")
        store.add_insight("sort words by their first letter", status="active")
        store.credit([a.id], Task(id="t1", family="f", prompt="sum of digits of 12"), 1.0, 0.5, "e1")
    return tmp_path / "run"


def _json(*args: str) -> object:
    result = runner.invoke(app, ["insights", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_list_show_search(run_dir):
    listed = _json("list", "--run-dir", str(run_dir))
    assert listed["version"] == 3 and len(listed["insights"]) == 2
    first = listed["insights"][0]
    assert first["text"].startswith("add the digits") and first["uses"] == 1
    shown = _json("show", first["id"], "--run-dir", str(run_dir))
    assert shown["utility"] == 0.5 and shown["task_stats"][0]["task_id"] == "t1" and shown["model"] == "m"
    hits = _json("search", "sort the words", "--run-dir", str(run_dir), "--embedder", "hashing", "-k", "1")
    assert [h["text"] for h in hits] == ["sort words by their first letter"]
    table = runner.invoke(app, ["insights", "list", "--run-dir", str(run_dir)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "right to left [carefully]" in table.output  # brackets are not markup
    missing = runner.invoke(app, ["insights", "show", "nope", "--run-dir", str(run_dir)])
    assert missing.exit_code != 0


def test_diff_rollback_export_import(run_dir, tmp_path):
    diff = _json("diff", "0", "3", "--run-dir", str(run_dir))
    assert len(diff["added"]) == 2 and len(diff["events"]) == 3
    assert runner.invoke(app, ["insights", "diff", "0", "3", "--run-dir", str(run_dir)]).exit_code == 0
    assert runner.invoke(app, ["insights", "diff", "0", "9", "--run-dir", str(run_dir)]).exit_code != 0
    exported = _json("export", str(tmp_path / "m.jsonl"), "--run-dir", str(run_dir))
    assert exported["lines"] == 1 + 2 + 1  # header, insights, task
    rolled = _json("rollback", "1", "--run-dir", str(run_dir), "--embedder", "hashing")
    assert rolled == {"rolled_back_to": 1, "version": 4}
    assert len(_json("list", "--run-dir", str(run_dir))["insights"]) == 1
    other = tmp_path / "other"
    report = _json("import", str(tmp_path / "m.jsonl"), "--run-dir", str(other), "--embedder", "hashing")
    assert report["added"] == 2 and report["tasks"] == 1 and report["version"] == 1


def test_console_script_lists_json(run_dir):
    exe = shutil.which("insightloop") or str(Path(__file__).resolve().parents[1] / ".venv/bin/insightloop")
    out = subprocess.run(
        [exe, "insights", "list", "--run-dir", str(run_dir), "--json", "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["insights"]) == 1
