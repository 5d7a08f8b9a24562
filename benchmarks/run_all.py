"""Run every benchmark in this folder, one at a time, and print one table of their headline ratios.

Each benchmark prints its own tables and ends with `ratio: <name> = <value>` lines (a fraction or a
speedup, measured side by side in that run); this script saves each benchmark's full output to
`--out/<name>.txt` and collects those lines into one table, with the load average before and after
each. Benchmarks run sequentially: two at once on two cores would measure each other.

    python benchmarks/run_all.py [--only hf,search] [--out docs/bench]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> arguments: the default (quick) size of each benchmark.
BENCHMARKS: dict[str, list[str]] = {
    "hf": ["--solve", "100"],
    "search": ["--tasks", "16", "--budgets", "6", "12"],
    "search_vs": ["--tasks", "16", "--budgets", "6"],
    "memory": ["--sizes", "1000,10000,100000"],
    "console": [],
    "adapt": [],
    "fold": [],
    "fold_step": [],
    "ray": [],
    "calibration": [],
}


def run(name: str, args: list[str], out: Path) -> tuple[list[str], float, float, float]:
    """Run one benchmark; return its ratio lines, seconds, and the load average before and after."""
    before = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py"), *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.monotonic() - start
    text = proc.stdout + (f"\n[stderr]\n{proc.stderr[-4000:]}" if proc.returncode else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.txt").write_text(text, encoding="utf-8")
    lines = proc.stdout.splitlines()
    ratios = [line.removeprefix("ratio:").strip() for line in lines if line.startswith("ratio:")]
    if proc.returncode:
        ratios.append(f"FAILED (exit {proc.returncode}); see {out / (name + '.txt')}")
    return ratios, seconds, before, os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmark names")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    rows = []
    for name in names:
        print(f"running {name} ...", flush=True)
        rows.append((name, *run(name, BENCHMARKS[name], args.out)))
    print(f"\n{'benchmark':<10} {'seconds':>8} {'load':>11}  ratio")
    for name, ratios, seconds, before, after in rows:
        for i, ratio in enumerate(ratios or ["(none printed)"]):
            head = f"{name:<10} {seconds:>8.0f} {before:>5.2f}→{after:<5.2f}" if i == 0 else " " * 31
            print(f"{head}  {ratio}")


if __name__ == "__main__":
    main()
