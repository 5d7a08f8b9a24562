"""MCTS speed of this tree against an earlier commit, side by side in one run, on the same workload.

Checks the earlier commit out into a git worktree (once), then runs that commit's own
`benchmarks/bench_search.py` with the package imported from the worktree, then this tree's, with the
same suite, tasks, budgets and search settings (free-text answers on both sides: the earlier code had
no `answer_mode=choose`). Prints both tables and the ratios of MCTS generated tokens/s and rollouts/s
(prefix reuse on), with the load average before and after each side.

    python benchmarks/bench_search_vs.py [--commit 670ee00] [--tasks 16] [--budgets 6]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^mcts\s+on\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")


def worktree(commit: str) -> Path:
    """A detached worktree of `commit` under the temp dir, added on first use."""
    path = Path(tempfile.gettempdir()) / f"insightloop-{commit}"
    if not (path / "__init__.py").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(path), commit],
                       check=True, capture_output=True)
    return path


def run(script: Path, pythonpath: str | None, args: list[str]) -> tuple[str, float, float]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, text=True,
                         env=env).stdout
    return out, before, os.getloadavg()[0]


def mcts_rate(table: str) -> tuple[float, float]:
    """(rollouts/s, generated tokens/s) of the first MCTS row with prefix reuse on."""
    for line in table.splitlines():
        m = ROW.match(line.strip())
        if m:
            return float(m.group(4)), float(m.group(5))
    raise SystemExit(f"no 'mcts on' row in:\n{table}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commit", default="670ee00")
    ap.add_argument("--suite", default="bbh/boolean_expressions")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--budgets", type=int, nargs="+", default=[6])
    args = ap.parse_args()
    old_tree = worktree(args.commit)
    shim = Path(tempfile.mkdtemp(prefix="insightloop-shim-"))
    (shim / "insightloop").symlink_to(old_tree)  # `import insightloop` finds the earlier commit first
    common = ["--suite", args.suite, "--tasks", str(args.tasks), "--budgets", *map(str, args.budgets)]
    old, o_before, o_after = run(old_tree / "benchmarks" / "bench_search.py", str(shim), common)
    new, n_before, n_after = run(ROOT / "benchmarks" / "bench_search.py", None,
                                 [*common, "--set", "search.answer_mode=free"])
    print(f"== {args.commit} (load {o_before:.2f} -> {o_after:.2f})\n{old}")
    print(f"== this tree (load {n_before:.2f} -> {n_after:.2f})\n{new}")
    (o_roll, o_tok), (n_roll, n_tok) = mcts_rate(old), mcts_rate(new)
    print(f"ratio: MCTS generated tokens/s, this tree / {args.commit} = {n_tok / o_tok:.2f}x "
          f"({n_tok:.1f} vs {o_tok:.1f})")
    print(f"ratio: MCTS rollouts/s, this tree / {args.commit} = {n_roll / o_roll:.2f}x "
          f"({n_roll:.3f} vs {o_roll:.3f})")


if __name__ == "__main__":
    main()
