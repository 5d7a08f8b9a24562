"""Online improvement: does the daemon answer better as a stream of labeled tasks flows through it?

Feeds N labeled tasks of one family, in order, to a real daemon's inbox (embedded model) and lets it
answer each one with the memory as it stands, then learn from it (`daemon.learn`). The same stream
goes through a second daemon with learning off: the control. Each answer is graded against its
reference after it was given (the reference never chooses it). Prints, for both runs, the accuracy
of the first and the last `--window` answers, the difference with its 95 % bootstrap interval, and
the difference of differences (learning vs control); writes the per-task results and a plot of
rolling accuracy to `--out`.

    python benchmarks/bench_online.py --suite rg/syllogism --verifier boolean --tasks 300 \
        [--window 100] [--out docs/eval/online] [--set loop.fold_every=50 --set fold.method=sft]
        [--rg-config '{"min_animals": 1, "max_animals": 2, "max_instances": 3}']

A task file names its verifier; tasks whose suite verifier cannot go in a task file (reasoning-gym's,
scored against the generator's entry) are streamed with `--verifier` (e.g. `boolean` for Yes/No).
`--set` settings apply to the learning run only (e.g. folds), `--set-both` to both; the control
answers with the same decoding and never learns. The answers' distribution is printed too: a lift that comes from a
shifted label prior shows there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("insightloop"))
# Cheap learning per task: a few sampled attempts, one contrast pair, the paired admission test.
SETTINGS = ["search.strategy=sample", "search.rollouts=4", "search.answer_tokens=128", "loop.baseline_samples=0",
            "loop.pairs=1", "loop.analyst_drafts=2", "loop.synthesize=false", "memory.prompt_token_budget=600",
            "daemon.inbox_settle_s=0", "daemon.poll_seconds=0.2"]


def configured_rg(suite: str, n: int, seed: int, config: dict, verifier: str) -> list:
    """`n` tasks of a reasoning-gym dataset generated with `config` (its difficulty settings), to be
    graded by the task-file `verifier` (the suite's own `rg` scorer regenerates with the defaults)."""
    import reasoning_gym
    from insightloop.core.task import Task
    from insightloop.evals.verifiers import answer_instruction

    name = suite.removeprefix("rg/")
    data = reasoning_gym.create_dataset(name, size=n, seed=seed, **config)
    return [Task(id=f"{suite}/{seed}/{i}", family=suite, verifier=verifier, answer=str(e["answer"]),
                 prompt=f"{e['question']}\n\n{answer_instruction(verifier)}") for i, e in enumerate(data)]


def stream(suite: str, n: int, seed: int, verifier: str | None, rg_config: dict | None = None) -> list:
    """The stream's `n` tasks in a fixed shuffled order."""
    from insightloop.evals.suites import load_suite

    if rg_config:
        if not suite.startswith("rg/") or not verifier:
            raise SystemExit("--rg-config needs an rg/ suite and a --verifier (e.g. numeric)")
        tasks = configured_rg(suite, n, seed, rg_config, verifier)
    else:
        tasks = load_suite(suite, limit=n if suite.startswith("rg/") else None, seed=seed)
    random.Random(seed).shuffle(tasks)
    tasks = tasks[:n]
    if len(tasks) < n:
        raise SystemExit(f"{suite} has {len(tasks)} tasks; the stream needs {n}")
    return tasks


def write_inbox(run_dir: Path, tasks: list, verifier: str | None) -> None:
    """The stream as one task file."""
    inbox = run_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": t.id, "prompt": t.prompt, "answer": t.answer, "verifier": verifier or t.verifier,
                         "family": t.family}) for t in tasks]
    tmp = inbox / ".stream.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, inbox / "stream.jsonl")


def run_daemon(run_dir: Path, learn: bool, extra: list[str], both: list[str] = ()) -> float:
    """Run a daemon until its inbox is empty; return the wall time. `both` applies to either run,
    `extra` to the learning run only."""
    cmd = [CLI, "daemon", "--run-dir", str(run_dir), "--exit-when-idle"]
    for item in [*SETTINGS, *both, f"daemon.learn={str(learn).lower()}", *(extra if learn else [])]:
        cmd += ["--set", item]
    start = time.monotonic()
    with (run_dir / "daemon.log").open("ab") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=log)
    return time.monotonic() - start


def logged_seconds(run_dir: Path) -> float:
    """Wall time between the first and the last line of the daemon's log (a run not timed here)."""
    lines = (run_dir / "logs" / "daemon.jsonl").read_text(encoding="utf-8").splitlines()
    stamps = [json.loads(line)["ts"] for line in lines if line.strip()]
    return stamps[-1] - stamps[0] if stamps else 0.0


def outbox(run_dir: Path) -> dict[str, dict]:
    """The daemon's answers by task id."""
    rows = {}
    for path in sorted((run_dir / "outbox").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["id"]] = row
    return rows


def results(rows: dict[str, dict], order: list[str]) -> list[float]:
    """Per task, in stream order: 1.0 when the answer given was correct."""
    return [float(bool(rows[i].get("correct"))) for i in order if i in rows]


def answer_shares(rows: dict[str, dict], order: list[str]) -> dict[str, float]:
    """How often each answer (first word, lower case; `none` when nothing parsed) was given."""
    from collections import Counter

    words = [((rows[i].get("answer") or "none").strip().split() or ["none"])[0].strip(".,!").lower()
             for i in order if i in rows]
    return {w: round(c / len(words), 3) for w, c in Counter(words).most_common(6)}


def folds(run_dir: Path) -> list[dict]:
    """The folds the run's status.json lists (verdict, gate numbers, seconds)."""
    path = run_dir / "status.json"
    return json.loads(path.read_text(encoding="utf-8")).get("folds", []) if path.exists() else []


def diff_ci(first: list[float], last: list[float], rng: random.Random, n: int = 4000) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of mean(last) − mean(first) (independent samples)."""
    diffs = sorted(sum(rng.choices(last, k=len(last))) / len(last) - sum(rng.choices(first, k=len(first)))
                   / len(first) for _ in range(n))
    return diffs[int(0.025 * (n - 1))], diffs[int(0.975 * (n - 1))]


def summary(name: str, scores: list[float], window: int) -> dict[str, float]:
    first, last = scores[:window], scores[-window:]
    lo, hi = diff_ci(first, last, random.Random(0))
    out = {"first": sum(first) / len(first), "last": sum(last) / len(last), "lo": lo, "hi": hi, "n": len(scores)}
    out["diff"] = out["last"] - out["first"]
    print(f"{name:<9} answered {len(scores)}: first {window} {100 * out['first']:.1f} %, last {window} "
          f"{100 * out['last']:.1f} %, difference {100 * out['diff']:+.1f} points "
          f"[{100 * lo:+.1f}, {100 * hi:+.1f}]")
    return out


def paired_windows(curves: dict[str, list[float]], window: int) -> None:
    """Learning against control on the same tasks (paired bootstrap 95 % interval): the last window,
    and the whole stream."""
    from insightloop.core.stats import paired_ci

    learn, control = curves["learning"], curves["control"]
    for name, part in ((f"last {window}", slice(-window, None)), ("all tasks", slice(None))):
        lo, hi = paired_ci(control[part], learn[part], random.Random(0))
        mean = (sum(learn[part]) - sum(control[part])) / len(learn[part])
        print(f"paired, {name}: learning {100 * sum(learn[part]) / len(learn[part]):.1f} % vs control "
              f"{100 * sum(control[part]) / len(control[part]):.1f} %, {100 * mean:+.1f} points "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}]")


def plot(curves: dict[str, list[float]], window: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from insightloop.core.files import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, scores in curves.items():
        xs = list(range(window, len(scores) + 1))
        ax.plot(xs, [100 * sum(scores[i - window:i]) / window for i in xs], label=name)
    ax.set_xlabel("tasks answered")
    ax.set_ylabel(f"accuracy of the last {window} answers (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="rg/syllogism")
    ap.add_argument("--verifier", default=None, help="the task file's verifier (default: the suite's own)")
    ap.add_argument("--rg-config", type=json.loads, default=None,
                    help="a reasoning-gym dataset's settings as JSON, e.g. "
                    "'{\"min_animals\": 1, \"max_animals\": 2}' (needs --verifier)")
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("online-results"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="a setting of the learning run")
    ap.add_argument("--set-both", dest="both", action="append", default=[],
                    help="a setting of both runs (e.g. search.answer_tokens=64: the answers' length cap)")
    ap.add_argument("--reuse", action="store_true", help="read a run directory under --out whose outbox "
                    "already answers the whole stream instead of running its daemon again")
    ap.add_argument("--from-json", type=Path, default=None, help="print the comparison of a finished run's "
                    "online.json instead of running")
    args = ap.parse_args()
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        for name in ("learning", "control"):
            summary(name, saved["scores"][name], args.window)
        paired_windows(saved["scores"], args.window)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    curves, report = {}, {}
    tasks = stream(args.suite, args.tasks, args.seed, args.verifier, args.rg_config)
    order = [t.id for t in tasks]
    for name, learn in (("learning", True), ("control", False)):
        run_dir = args.out / f"run-{name}"
        load = os.getloadavg()[0]
        if args.reuse and (run_dir / "outbox").exists() and set(order) <= set(outbox(run_dir)):
            seconds = logged_seconds(run_dir)  # answered in an earlier invocation: read, not rerun
            print(f"{name:<9} read from {run_dir} (every task already answered)")
        else:
            write_inbox(run_dir, tasks, args.verifier)
            seconds = run_daemon(run_dir, learn, args.overrides, args.both)
        rows = outbox(run_dir)
        curves[name] = results(rows, order)
        report[name] = {**summary(name, curves[name], args.window), "seconds": seconds, "load": load,
                        "load_after": os.getloadavg()[0],
                        "answers_first": answer_shares(rows, order[:args.window]),
                        "answers_last": answer_shares(rows, order[-args.window:]), "folds": folds(run_dir)}
        print(f"{name:<9} answers, first {args.window}: {report[name]['answers_first']}; last {args.window}: "
              f"{report[name]['answers_last']}; {seconds:.0f} s, load {load:.2f} → {os.getloadavg()[0]:.2f}")
        for f in report[name]["folds"]:
            print(f"{'':<9} fold {json.dumps(f)}")
    paired_windows(curves, args.window)
    gain = report["learning"]["diff"] - report["control"]["diff"]
    print(f"ratio: online improvement, learning minus control = {100 * gain:+.1f} points "
          f"(learning {100 * report['learning']['diff']:+.1f}, control {100 * report['control']['diff']:+.1f})")
    plot(curves, min(args.window, 50), args.out / "online_curve.png")
    record = {"suite": args.suite, "verifier": args.verifier, "rg_config": args.rg_config,
              "settings": [*SETTINGS, *args.both],
              "learning_settings": args.overrides, "report": report, "scores": curves}
    (args.out / "online.json").write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
