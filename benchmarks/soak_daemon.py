"""Soak test of `insightloop daemon`: many inbox tasks, repeated `kill -9` and restarts.

Writes N reasoning-gym basic_arithmetic problems as inbox JSONL files (numeric verifier), runs the
real daemon on the embedded model with tiny budgets, kills it with SIGKILL at random moments and
restarts it until every task is answered, then reports tasks/hour, the daemon's resident memory
(RSS) growth within the final run (from its first finished task, and over its second half, once
caches such as the backend's prefix KV cache have filled), and lost / duplicated tasks (both 0).

    python benchmarks/soak_daemon.py --tasks 200 --kills 6 [--run-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("insightloop"))
TINY = ["search.strategy=sample", "search.rollouts=1", "search.answer_tokens=12", "loop.baseline_samples=0",
        "loop.synthesize=false", "loop.max_candidates=1", "loop.pairs=1", "loop.analyst_tokens=24",
        "policy.threads=1", "daemon.inbox_settle_s=0", "daemon.status_every_s=1", "daemon.poll_seconds=0.2",
        "daemon.stop_grace_s=2"]


def write_tasks(run_dir: Path, n: int, per_file: int, seed: int) -> list[str]:
    from insightloop.evals.suites import load_suite

    tasks = load_suite("rg/basic_arithmetic", limit=n, seed=seed)
    inbox = run_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(tasks), per_file):
        lines = [json.dumps({"id": t.id, "prompt": t.prompt, "answer": t.answer, "verifier": "numeric"})
                 for t in tasks[k:k + per_file]]
        tmp = inbox / f".part{k}.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, inbox / f"soak-{k // per_file:03d}.jsonl")
    return [t.id for t in tasks]


def start(run_dir: Path, idle: bool) -> subprocess.Popen:
    cmd = [CLI, "daemon", "--run-dir", str(run_dir)] + (["--exit-when-idle"] if idle else [])
    for item in TINY:
        cmd += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = open(run_dir / "soak.stderr", "ab")  # noqa: SIM115 - lives as long as the daemon
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=log)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def done(run_dir: Path) -> int:
    path = run_dir / "daemon.sqlite"
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM tasks WHERE state IN ('done','failed')").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def watch(proc: subprocess.Popen, run_dir: Path, kill_after: float | None) -> dict:
    """Sample RSS until the process exits or `kill_after` seconds pass (then SIGKILL it)."""
    t0, samples, timeline = time.monotonic(), [], []
    start_done = done(run_dir)
    while proc.poll() is None:
        if kill_after is not None and time.monotonic() - t0 >= kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        rss, n = rss_mb(proc.pid), done(run_dir) - start_done
        if rss is not None:
            samples.append(rss)
            if n > 0 and (not timeline or timeline[-1][0] != n):
                timeline.append((n, round(rss, 1)))  # RSS once models are loaded and episodes run
        time.sleep(0.5)
    half = [rss for n, rss in timeline if n >= timeline[-1][0] / 2] if timeline else []
    return {"seconds": time.monotonic() - t0, "tasks": done(run_dir) - start_done, "rc": proc.returncode,
            "rss_first_task_mb": timeline[0][1] if timeline else None,
            "rss_mid_mb": half[0] if half else None, "rss_end_mb": timeline[-1][1] if timeline else None,
            "rss_max_mb": max(samples, default=None), "timeline": timeline}


def outbox_ids(run_dir: Path) -> list[str]:
    ids = []
    for path in sorted((run_dir / "outbox").glob("*.jsonl")):
        ids += [json.loads(line)["id"] for line in path.read_text().splitlines()]
    return ids


def soak(run_dir: Path, args: argparse.Namespace) -> dict:
    """Kill-and-restart cycles, then one run to completion; returns the measurements."""
    rng = random.Random(args.seed)
    ids = write_tasks(run_dir, args.tasks, args.per_file, args.seed)
    runs, t0 = [], time.monotonic()
    for _ in range(args.kills):
        runs.append(watch(start(run_dir, idle=False), run_dir, rng.uniform(args.kill_min, args.kill_max)))
        last = runs[-1]
        print(f"run {len(runs)}: SIGKILL after {last['seconds']:.0f}s, {last['tasks']} tasks", flush=True)
    final = watch(start(run_dir, idle=True), run_dir, None)
    runs.append(final)
    wall = time.monotonic() - t0
    print(f"final run: {final['tasks']} tasks in {final['seconds']:.0f}s, exit {final['rc']}", flush=True)
    answered = outbox_ids(run_dir)
    def growth(since: str) -> float | None:
        a, b = final[since], final["rss_end_mb"]
        return None if a is None or b is None else round(b - a, 1)

    return {
        "tasks": len(ids), "answered": len(set(answered)), "lost": len(set(ids) - set(answered)),
        "duplicated": len(answered) - len(set(answered)), "kills": args.kills, "wall_seconds": round(wall, 1),
        "tasks_per_hour": round(len(set(answered)) / wall * 3600, 1), "final_run_tasks": final["tasks"],
        "final_run_tasks_per_hour": round(final["tasks"] / max(final["seconds"], 1e-9) * 3600, 1),
        "rss_after_first_task_mb": final["rss_first_task_mb"], "rss_end_mb": final["rss_end_mb"],
        "rss_growth_mb": growth("rss_first_task_mb"), "rss_growth_second_half_mb": growth("rss_mid_mb"),
        "rss_max_mb_any_run": max((r["rss_max_mb"] or 0) for r in runs),
        "failed_files": sorted(p.name for p in (run_dir / "failed").iterdir()),
        "run_dir": str(run_dir), "runs": runs,
    }


SHOWN = ("tasks", "answered", "lost", "duplicated", "kills", "wall_seconds", "tasks_per_hour",
         "final_run_tasks", "final_run_tasks_per_hour", "rss_after_first_task_mb", "rss_end_mb",
         "rss_growth_mb", "rss_growth_second_half_mb", "rss_max_mb_any_run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--per-file", type=int, default=25)
    ap.add_argument("--kills", type=int, default=6, help="SIGKILLs before the final run to completion")
    ap.add_argument("--kill-min", type=float, default=40.0, help="seconds a run lives at least before a kill")
    ap.add_argument("--kill-max", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    result = soak(args.run_dir or Path(tempfile.mkdtemp(prefix="soak-daemon-")), args)
    for key in SHOWN:
        value = result[key]
        print(f"{key:>26}: {value:.1f}" if isinstance(value, float) else f"{key:>26}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["lost"] == 0 and result["duplicated"] == 0 else 1)


if __name__ == "__main__":
    main()
