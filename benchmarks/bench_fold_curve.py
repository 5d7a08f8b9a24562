"""Fold lift on few-shot suites: test accuracy against fold steps, from five training problems.

For each suite the eval harness's split (`evals.suites.split`, seed 0) gives the training and test
problems. The policy samples `--samples` attempts per training problem (`sample` strategy, T=0.8):
those are the rollout budget. Then, each from the base weights:

- `fold-sft-K`: one fold of K SFT steps on the verified attempts (`rl.fold.train`, LoRA on a CPU, the
  config's fold settings otherwise), for each K of `--steps`;
- `grpo`: plain TRL GRPO on the training problems with the same number of rollouts (group size x
  prompts x steps <= the sampling budget), as the harness's `grpo` method runs it.

Every model, the base included, answers the same test problems the way the fold gate measures (one
greedy solver attempt each, `rl.gate.gate_search`), so each method is a paired comparison with the
base: lift in points, 95 % paired bootstrap interval, McNemar p. Accuracy counts exact answers (reward
1; the mean reward, which gives reasoning-gym's partial credit, is kept beside it). The output is a
table, a JSON file and a plot of accuracy against fold steps per suite.

    python benchmarks/bench_fold_curve.py [--suites bbh/boolean_expressions,bbh/navigate,bbh/object_counting]
        [--train 5] [--test 100] [--samples 8] [--steps 8,32,96] [--no-grpo] [--out docs/eval/fold_curve]
        [--set fold.reference_answers=true]

With `--set fold.reference_answers=true` each fold also learns the training problems' reference answers
(answer-only completions, `rl.sources.reference_examples`), as a daemon fold on a labeled stream does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from insightloop.core.budget import Budget  # noqa: E402
from insightloop.core.config import Config  # noqa: E402
from insightloop.core.models import resolve_policy  # noqa: E402
from insightloop.core.stats import mcnemar_p, paired_ci  # noqa: E402
from insightloop.evals.harness.baselines import grpo_plan, train_grpo  # noqa: E402
from insightloop.evals.harness.records import RunSpec  # noqa: E402
from insightloop.evals.suites import load_suite, split  # noqa: E402
from insightloop.evals.verifiers import verify  # noqa: E402
from insightloop.rl.fold import FoldData  # noqa: E402
from insightloop.rl.fold import train as fold_train  # noqa: E402
from insightloop.rl.gate import gate_search, scores  # noqa: E402
from insightloop.rl.policy import load_policy, resolved  # noqa: E402
from insightloop.rl.sources import reference_examples  # noqa: E402


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def sft_fold(base: str, data: FoldData, cfg: Config, steps: int, where: Path) -> tuple[Path, dict]:
    """One SFT fold of `steps` steps from the base weights; the merged model is saved to `where`."""
    fc = resolved(cfg.fold.model_copy(update={"method": "sft", "steps": steps}))
    model, tok = load_policy(base)
    t0 = time.perf_counter()
    model, counts, metrics = fold_train(model, tok, data, fc, verify, cfg.seed)
    model.save_pretrained(where, safe_serialization=True)
    tok.save_pretrained(where)
    return where, {"seconds": time.perf_counter() - t0, "data": counts,
                                     "loss": metrics.get("train_loss")}


def grpo_alone(name: str, train: list, test: list, cfg: Config, rollouts: int, seed: int,
               where: Path) -> tuple[Path | None, dict]:
    """Plain GRPO on the training problems within `rollouts` samples, as the harness's `grpo` runs it."""
    run = RunSpec(suite=name, seed=seed, budget=rollouts, train=train, test=test, cfg=cfg)
    budget = Budget(max_rollouts=rollouts).start()
    if grpo_plan(run, budget)[1] == 0:
        return None, {"steps": 0}
    t0 = time.perf_counter()
    detail = train_grpo(run, budget, where)
    return where / "model", detail | {"steps": int(detail["steps"]), "rollouts": budget.rollouts,
                                      "seconds": time.perf_counter() - t0}


def graded(lm, test: list, search) -> tuple[list[float], float]:  # noqa: ANN001
    """Per problem 1.0 when the greedy attempt is right (as `Reward.correct`: reward 1; reasoning-gym's
    scorers give partial rewards to answers that contain the right one among other text), and the mean
    reward."""
    rewards = scores(lm, test, search)
    return [float(r >= 1.0) for r in rewards], 100 * sum(rewards) / max(1, len(rewards))


def compare(base: list[float], new: list[float], seed: int) -> dict:
    lo, hi = paired_ci(base, new, random.Random(seed))
    n = len(base)
    return {"accuracy": 100 * sum(new) / n, "lift": 100 * (sum(new) - sum(base)) / n,
            "ci": [100 * lo, 100 * hi], "mcnemar_p": mcnemar_p(base, new)}


def run_suite(name: str, args: argparse.Namespace, cfg: Config, lm, scratch: Path) -> dict:  # noqa: ANN001
    from bench_families import label_prior  # this directory's label-prior measure
    from insightloop.agent.search.solve import solve_many

    base_path = str(resolve_policy(cfg.policy.model))
    train, test = split(load_suite(name), args.train, args.test, args.seed, cap_test=True)
    search = gate_search(cfg)
    out: dict = {"suite": name, "train": len(train), "test": len(test), "rows": []}
    t0 = time.perf_counter()
    lm.load_weights(base_path)
    base, reward = graded(lm, test, search)
    out["rows"].append({"method": "base", "steps": 0} | compare(base, base, args.seed) | {"reward": reward}
                       | {"seconds": 0.0, "eval_seconds": time.perf_counter() - t0, "load": load()})
    print(f"  {name} base {100 * sum(base) / len(base):.1f} % ({time.perf_counter() - t0:.0f} s, load {load()})",
          flush=True)
    sampling = cfg.search.model_copy(update={"strategy": "sample", "rollouts": args.samples, "temperature": 0.8})
    t0 = time.perf_counter()
    episodes = solve_many(train, lm, sampling, max_active=len(train))
    attempts = [tr for ep in episodes for tr in ep.trajectories]
    correct = [tr for tr in attempts if tr.correct]
    out["sampling"] = {"rollouts": len(attempts), "correct": len(correct),
                       "problems_solved": sum(ep.correct for ep in episodes),
                       "seconds": time.perf_counter() - t0}
    print(f"  {name} sampled {len(attempts)} attempts, {len(correct)} verified, "
          f"{out['sampling']['problems_solved']}/{len(train)} problems ({out['sampling']['seconds']:.0f} s)",
          flush=True)
    # With `fold.reference_answers`, the training problems' labels join the fold as answer-only worked
    # examples (as the daemon's folds take them); the test problems are never among them.
    refs = reference_examples(train) if cfg.fold.reference_answers else []
    out["reference_examples"] = len(refs)
    prior = label_prior(test)
    out["label_prior"] = None if prior is None else 100 * prior
    data = FoldData(episodes=episodes, examples=refs, validation=test)
    variants = [("fold-sft", k) for k in args.steps] + ([] if args.no_grpo else [("grpo", 0)])
    for method, steps in variants:
        where = scratch / f"{name.replace('/', '_')}-{method}-{steps}"
        if method == "fold-sft":
            if not correct and not refs:
                out["rows"].append({"method": method, "steps": steps, "note": "no verified attempt to fold"})
                continue
            path, detail = sft_fold(base_path, data, cfg, steps, where)
        else:
            path, detail = grpo_alone(name, train, test, cfg, len(attempts), args.seed, where)
            steps = int(detail["steps"])
            if path is None:
                out["rows"].append({"method": method, "steps": 0, "note": "budget below one GRPO step"})
                continue
        t1 = time.perf_counter()
        lm.load_weights(path)
        new, reward = graded(lm, test, search)
        row = {"method": method, "steps": steps} | compare(base, new, args.seed) | {"reward": reward} | detail | {
            "eval_seconds": time.perf_counter() - t1, "load": load()}
        out["rows"].append(row)
        print(f"  {name} {method} {steps} steps: {row['accuracy']:.1f} % lift {row['lift']:+.1f} "
              f"[{row['ci'][0]:+.1f}, {row['ci'][1]:+.1f}] (train {detail['seconds']:.0f} s, "
              f"eval {row['eval_seconds']:.0f} s, load {load()})", flush=True)
    lm.load_weights(base_path)
    return out


SETTINGS = ("train", "test", "samples", "steps", "no_grpo", "seed", "set")


def finished_suites(path: Path, args: argparse.Namespace) -> dict[str, dict]:
    """The suites of an earlier run at `path` whose settings equal this run's, by name."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    if any(earlier.get("args", {}).get(k) != getattr(args, k) for k in SETTINGS):
        raise SystemExit(f"{path} was written with other settings; use another --out or drop --resume")
    return {res["suite"]: res for res in earlier.get("results", [])}


def table(results: list[dict]) -> str:
    lines = ["| suite | method | steps | test accuracy % | lift vs base, 95 % paired CI | McNemar p "
             "| mean reward % | train s |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        prior = res.get("label_prior")
        lines.append(f"| {res['suite']} | label prior | – | {'–' if prior is None else f'{prior:.1f}'} | "
                     f"always the test set's most frequent answer | – | – | – |")
        for r in res["rows"]:
            if "accuracy" not in r:
                lines.append(f"| {res['suite']} | {r['method']} | {r['steps']} | – | {r['note']} | – | – | – |")
                continue
            ci = "–" if r["method"] == "base" else f"{r['lift']:+.1f} [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]"
            p = "–" if r["method"] == "base" else f"{r['mcnemar_p']:.3g}"
            reward = "–" if r.get("reward") is None else f"{r['reward']:.1f}"
            lines.append(f"| {res['suite']} | {r['method']} | {r['steps']} | {r['accuracy']:.1f} | {ci} | {p} | "
                         f"{reward} | {r.get('seconds', 0.0):.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for res in results:
        pts = sorted((r["steps"], r["accuracy"]) for r in res["rows"]
                     if r["method"] in ("base", "fold-sft") and "accuracy" in r)
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{res['suite']} fold (SFT)")
        g = [r for r in res["rows"] if r["method"] == "grpo" and "accuracy" in r]
        if g:
            ax.scatter([g[0]["steps"]], [g[0]["accuracy"]], marker="x", s=60, color=line[0].get_color(),
                       label=f"{res['suite']} grpo alone")
    ax.set_xscale("symlog", linthresh=8)
    refs = any(res.get("reference_examples") for res in results)
    ax.set_xlabel("fold steps (SFT on the verified attempts" + (" and reference answers" if refs else "")
                  + " of 5 training problems)")
    ax.set_ylabel("test accuracy %, greedy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default="bbh/boolean_expressions,bbh/navigate,bbh/object_counting")
    ap.add_argument("--train", type=int, default=5)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--samples", type=int, default=8, help="attempts per training problem (the rollout budget)")
    ap.add_argument("--steps", default="8,32,96", help="SFT fold step counts, each from the base weights")
    ap.add_argument("--no-grpo", action="store_true", help="skip plain GRPO at the same rollout budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--out", default="docs/eval/fold_curve")
    ap.add_argument("--resume", action="store_true",
                    help="keep the suites already in OUT/fold_curve.json from a run with the same settings")
    args = ap.parse_args()
    args.steps = [int(s) for s in args.steps.split(",") if s]
    from insightloop.agent.backends import make_lm
    from insightloop.core.config import load_config

    cfg = load_config(None, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"fold curve: {args.suites}; train {args.train}, test {args.test}, {args.samples} samples per "
          f"training problem; SFT steps {args.steps}; {os.cpu_count()} CPUs, load {load()}", flush=True)
    done = finished_suites(out / "fold_curve.json", args) if args.resume else {}
    lm = make_lm(cfg.policy)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fold-curve-") as scratch:
        for name in args.suites.split(","):
            if name in done:
                print(f"  {name}: kept from {out / 'fold_curve.json'}", flush=True)
                results.append(done[name])
            else:
                results.append(run_suite(name, args, cfg, lm, Path(scratch)))
            (out / "fold_curve.json").write_text(json.dumps(
                {"args": {k: v for k, v in vars(args).items()}, "results": results}, indent=2))
    text = table(results)
    print(text)
    print(f"total {(time.perf_counter() - started) / 60:.1f} min, load {load()}")
    plot(results, out / "fold_curve.png")


if __name__ == "__main__":
    sys.exit(main())
