"""A real fold inside the real daemon: the `insightloop daemon` console script as a subprocess, on the
embedded SmolLM2 policy and MiniLM embedder, learning from labeled inbox tasks with `loop.fold_every`.

After the third learned episode the learner folds the verified attempts into the weights (SFT with
LoRA, one step), the gate measures old vs new weights on a held-out problem through the live backend
and, with a tolerance that keeps any fold, accepts it: CURRENT moves to the checkpoint, the backend
keeps serving it (the gate's hand-off), status.json shows the fold and the served checkpoint, and the
task after the fold is answered on the new weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

CLI = str(Path(sys.executable).with_name("insightloop"))
# Yes/No questions answered by choosing the likelier label (`answer_mode=choose`), so every attempt
# ends with a gradable answer line and the first three leave the fold correct attempts to learn from.
QUESTIONS = [("Is 5 greater than 2?", "Yes"), ("Is the sun hot?", "Yes"), ("Do birds have wings?", "Yes"),
             ("Is 1 greater than 9?", "No")]
FOLD_EVERY = 3
SETTINGS = ["search.strategy=sample", "search.rollouts=2", "search.answer_tokens=32", "search.answer_mode=choose",
            "search.seed=1", "loop.baseline_samples=0", "loop.synthesize=false", "loop.max_candidates=1",
            "loop.pairs=1", "loop.analyst_drafts=1", "loop.analyst_tokens=32", "loop.admission_problems=2",
            "policy.threads=2", "daemon.inbox_settle_s=0", "daemon.status_every_s=0.5", "daemon.poll_seconds=0.2",
            "daemon.learn=true", f"loop.fold_every={FOLD_EVERY}", "fold.method=sft", "fold.steps=1",
            "fold.batch_size=2", "fold.gate_slice=1", "fold.gate_max_tokens=32",
            # Under `no_worse` a drop up to the tolerance is always kept: with 1.0 the gate accepts any fold.
            "fold.gate_require=no_worse", "fold.gate_tolerance=1.0"]
PROBE = "model.layers.0.self_attn.q_proj.weight"


def write_inbox(run_dir: Path) -> list[str]:
    inbox = run_dir / "inbox"
    inbox.mkdir(parents=True)
    ids = [f"q{i}" for i in range(1, len(QUESTIONS) + 1)]
    lines = [json.dumps({"id": i, "prompt": f"{q} Answer Yes or No.", "answer": a, "verifier": "boolean"})
             for i, (q, a) in zip(ids, QUESTIONS, strict=True)]
    (inbox / ".tasks.tmp").write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(inbox / ".tasks.tmp", inbox / "tasks.jsonl")
    return ids


def run_daemon(run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [CLI, "daemon", "--run-dir", str(run_dir), "--exit-when-idle"]
    for item in SETTINGS:
        cmd += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run(cmd, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=900)


def tensor(folder: Path, name: str):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return f.get_tensor(name)


def test_daemon_folds_gate_accepts_and_backend_serves_the_kept_weights(tmp_path: Path) -> None:
    import torch
    from insightloop.core.models import embedded_policy_path
    from insightloop.rl import checkpoints as ck

    run = tmp_path / "run"
    ids = write_inbox(run)
    proc = run_daemon(run)
    logs = [json.loads(line) for line in (run / "logs" / "daemon.jsonl").read_text().splitlines()]
    trail = "\n".join(json.dumps(r)[:300] for r in logs[-15:]) + "\n" + proc.stderr[-2000:]
    assert proc.returncode == 0, trail

    # Every task was answered, in order, with a graded answer.
    rows = [json.loads(line) for line in (run / "outbox" / "tasks.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ids, trail
    for r in rows:
        assert "error" not in r and r["answer"] is not None and r["reward"] in (0.0, 1.0), r
    assert (run / "done" / "tasks.jsonl").exists() and not any((run / "failed").iterdir())

    # Exactly one real fold: it trained on verified attempts and the gate measured a held-out problem.
    folders = ck.manifest_folders(run)
    assert [p.name for p in folders] == ["1"], trail
    folder = folders[0]
    m = ck.read_manifest(folder)
    assert (m.status, m.method, m.steps, m.parent, m.base_model) == ("accepted", "sft", 1, None, "embedded")
    assert m.data_counts["sft_examples"] >= 1 and m.data_counts["validation"] >= 1
    assert m.data_counts["episodes"] >= 2 and "loss" in m.metrics
    assert m.gate is not None and m.gate["accepted"] is True and m.gate["n"] == m.data_counts["validation"]
    assert m.seconds is not None and m.seconds > 0 and m.settled is not None
    # The kept weights are new weights, not a copy of the base model's.
    assert not torch.equal(tensor(folder, PROBE), tensor(embedded_policy_path(), PROBE))

    # status.json shows the fold with the gate's numbers, and the backend serving its checkpoint.
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and status["counters"]["done"] == len(ids)
    assert status["fold_totals"] == {"accepted": 1}
    (rec,) = status["folds"]
    assert rec["index"] == 1 and rec["status"] == "accepted" and rec["method"] == "sft" and rec["steps"] == 1
    assert rec["n"] is not None and rec["n"] >= 1 and rec["n"] == m.gate["n"]
    for key in ("old_accuracy", "new_accuracy"):
        assert isinstance(rec[key], float) and 0.0 <= rec[key] <= 1.0 and rec[key] == m.gate[key]
    assert rec["rule"] == "interval" and rec["reason"] and rec["seconds"] > 0
    assert ck.current(run) == folder and (run / "checkpoints" / "CURRENT").read_text().strip() == "1"
    assert status["checkpoint"] == "1"

    # The log: the fold ran inside the learning step after FOLD_EVERY learned episodes, the learner
    # handed the accepted checkpoint to the live backend, and the next task was answered after that.
    msgs = [r["msg"] for r in logs]
    assert msgs.count("fold_started") == 1 and msgs.count("fold_finished") == 1, trail
    started = logs[msgs.index("fold_started")]["event"]
    assert started["episodes"] == FOLD_EVERY
    finished = logs[msgs.index("fold_finished")]["event"]
    assert finished["ok"] is True and "error" not in finished["detail"]
    result = msgs.index("fold_result")
    assert logs[result]["verdict"] == "accepted" and logs[result]["index"] == 1
    assert Path(logs[result]["checkpoint"]).resolve() == folder.resolve()
    answered = [i for i, r in enumerate(logs) if r["msg"] == "episode_finished" and not r["event"]["train"]]
    assert [logs[i]["event"]["task_id"] for i in answered] == ids
    assert answered[FOLD_EVERY - 1] < result < answered[FOLD_EVERY]
    assert not any(r["level"] == "error" for r in logs), trail
