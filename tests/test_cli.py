"""The command line's shared parts: the one error boundary, and `--config`/`--set` on every command
(here `insights` and `status`, which gained them). No model loads: the memory uses the hashing
embedder and the config errors are raised before anything is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from insightloop.apps.cli.errors import CommandError, ErrorBoundary, user_errors
from insightloop.apps.cli.main import app
from insightloop.apps.daemon.status import DaemonStatus, write_status
from insightloop.core.config import MemoryConfig
from insightloop.core.errors import UserError
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.store import MemoryStore
from typer.testing import CliRunner

runner = CliRunner()
CLI = str(Path(sys.executable).parent / "insightloop")


class HeldLock(UserError):
    exit_code = 3


def _boundary_app() -> typer.Typer:
    """A two-command app under the boundary: one raises a given error, one exits normally."""
    demo = typer.Typer(cls=ErrorBoundary)

    @demo.command()
    def fail(kind: str) -> None:
        if kind == "config":
            raise UserError("invalid config (x.yaml):\n  search.width = 0: too small\n  seed: unknown key")
        if kind == "locked":
            raise HeldLock("another daemon (pid 42) holds runs/a")
        if kind == "value":
            with user_errors(ValueError):
                raise ValueError("no suite 'nope'")
        raise RuntimeError("a bug")

    @demo.command()
    def ok() -> None:
        print("fine")

    return demo


@pytest.mark.parametrize(("kind", "code", "line"), [
    ("config", 2, "error: invalid config (x.yaml): search.width = 0: too small; seed: unknown key"),
    ("locked", 3, "error: another daemon (pid 42) holds runs/a"),
    ("value", 2, "error: no suite 'nope'"),
])
def test_a_user_error_is_one_stderr_line_and_its_exit_code(kind: str, code: int, line: str) -> None:
    result = runner.invoke(_boundary_app(), ["fail", kind])
    assert result.exit_code == code
    assert result.stderr == line + "\n" and result.stdout == ""
    assert "Traceback" not in result.output


def test_an_unknown_exception_keeps_its_traceback() -> None:
    result = runner.invoke(_boundary_app(), ["fail", "bug"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert runner.invoke(_boundary_app(), ["ok"]).stdout == "fine\n"


def test_command_error_carries_its_exit_code() -> None:
    assert CommandError("x").exit_code == 2 and CommandError("y", exit_code=3).exit_code == 3
    assert isinstance(CommandError("x"), UserError)


def test_the_console_script_prints_a_config_error_without_traceback(tmp_path: Path) -> None:
    out = subprocess.run([CLI, "solve", "--prompt", "1+1?", "--set", "search.width=0"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and "search.width" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


@pytest.fixture
def memory_run(tmp_path: Path) -> Path:
    with MemoryStore.open(tmp_path / "run", HashingEmbedder(), MemoryConfig(embedder="hashing")) as store:
        store.add_insight("add the digits from right to left", status="active")
        store.add_insight("sort words by their first letter", status="active")
    return tmp_path / "run"


def test_insights_take_config_and_set(memory_run: Path, tmp_path: Path) -> None:
    config = tmp_path / "hashing.yaml"
    config.write_text("memory:\n  embedder: hashing\n")
    base = ["insights", "search", "sort the words", "--run-dir", str(memory_run), "-k", "1", "--json"]
    for extra in (["--config", str(config)], ["--set", "memory.embedder=hashing"]):
        result = runner.invoke(app, [*base, *extra])  # the embedder comes from the config
        assert result.exit_code == 0, result.output
        assert [h["text"] for h in json.loads(result.stdout)] == ["sort words by their first letter"]
    listed = runner.invoke(app, ["insights", "list", "--run-dir", str(memory_run), "--json",
                                 "--config", str(config), "--set", "memory.top_k=3"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)["insights"]) == 2
    bad = runner.invoke(app, ["insights", "list", "--run-dir", str(memory_run), "--set", "memory.top_k=-1"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and "memory.top_k" in bad.stderr
    assert bad.stderr.count("\n") == 1
    missing = runner.invoke(app, ["insights", "list", "--run-dir", str(memory_run), "--config", "no.yaml"])
    assert missing.exit_code == 2 and "config file not found" in missing.stderr


def test_status_takes_config_and_set(tmp_path: Path) -> None:
    write_status(tmp_path, DaemonStatus(state="idle", pid=0, updated_at=1.0))
    config = tmp_path / "daemon.yaml"
    config.write_text("daemon:\n  poll_seconds: 0.5\n")
    result = runner.invoke(app, ["status", "--run-dir", str(tmp_path), "--json", "--config", str(config),
                                 "--set", "daemon.status_every_s=1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "idle"
    bad = runner.invoke(app, ["status", "--run-dir", str(tmp_path), "--set", "daemon.poll_seconds=0"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and "daemon.poll_seconds" in bad.stderr
    assert bad.stdout == ""
