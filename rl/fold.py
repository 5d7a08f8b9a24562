"""One fold: data from the run → TRL training → checkpoint → gate → hand-off to the live backend.

`fold(run_dir, cfg, ...)` is what `insightloop fold` and the learning loop (every N episodes) call.
It trains from the current checkpoint (or the base model) on what the loop verified (`rl.sources`:
correct attempts, verified chains, admitted worked examples), writes checkpoints/<n>/, measures the
old and new weights on held-out tasks through the live backend, and either moves CURRENT to the new
checkpoint (the backend keeps serving it) or rolls back (CURRENT unchanged, the backend back on the
old weights, the rejected weights deleted, their manifest kept with the gate's numbers and the
fold's seconds). On a CPU the fold trains LoRA adapters by default (`rl.policy.resolved`). Progress
goes to `on_event` as typed `FoldEvent`s; nothing here prints.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from insightloop.agent.backends import make_lm
from insightloop.core.config import Config, FoldConfig
from insightloop.core.episode import Episode
from insightloop.core.models import resolve_policy
from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers import verify
from insightloop.memory.records import Insight
from insightloop.rl import checkpoints as ck
from insightloop.rl.data import build_dpo_pairs, build_grpo_prompts, build_sft_examples, chat_render
from insightloop.rl.dpo import make_dpo_trainer
from insightloop.rl.gate import GateResult, InsightRetest, gate, retest_insight
from insightloop.rl.grpo import make_grpo_trainer
from insightloop.rl.policy import load_policy, resolved, trained_model
from insightloop.rl.sft import make_sft_trainer
from insightloop.rl.sources import FoldData, load_fold_data, without_held_out
from pydantic import BaseModel, Field

Method = Literal["grpo", "sft", "dpo"]
VerifyFn = Callable[[Task, str], Reward]


class FoldEvent(BaseModel):
    """Progress of a fold: a stage starting, a training step done, or the end."""

    kind: Literal["fold_stage", "fold_step", "fold_done"]
    stage: str = ""
    step: int = 0
    total: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    ts: float = Field(default_factory=time.time)


OnFoldEvent = Callable[[FoldEvent], None]


class FoldResult(BaseModel):
    """The outcome: the checkpoint written, whether it now serves, and the numbers behind that."""

    index: int
    checkpoint: str
    accepted: bool
    method: str
    steps: int
    lora: bool
    parent: str | None
    data_counts: dict[str, int]
    metrics: dict[str, float]
    gate: GateResult
    absorbed: list[InsightRetest] = Field(default_factory=list)
    seconds: float


class InsightStore(Protocol):
    """The part of the memory store the post-fold re-test needs.

    Contract: `list_insights()` returns every stored insight; `mark_absorbed` records that an
    insight's lesson is now in the weights and returns the updated insight.
    """

    def list_insights(self) -> Sequence[Insight]: ...

    def mark_absorbed(self, insight_id: str) -> Insight: ...


def _default_verify() -> VerifyFn:
    return verify


def _progress(on_event: OnFoldEvent | None, stage: str, total: int) -> Any:
    """A transformers callback forwarding each optimizer step (and its logged metrics) as an event."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if on_event is not None:
                nums = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
                on_event(FoldEvent(kind="fold_step", stage=stage, step=state.global_step, total=total,
                                   metrics=nums))

    return Progress()


def _stage(on_event: OnFoldEvent | None, stage: str, total: int = 0) -> None:
    if on_event is not None:
        on_event(FoldEvent(kind="fold_stage", stage=stage, total=total))


def _metrics(log_history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The last value of every logged number, plus the mean loss (and reward) over the steps."""
    out: dict[str, float] = {}
    for entry in log_history:
        out.update({k: float(v) for k, v in entry.items() if isinstance(v, int | float)})
    for key in ("loss", "reward"):
        vals = [float(e[key]) for e in log_history if isinstance(e.get(key), int | float)]
        if vals:
            out[f"mean_{key}"] = sum(vals) / len(vals)
    return out


def _trainer(method: str, model: Any, tok: Any, data: FoldData, fc: FoldConfig, work: str,
             verify: VerifyFn, seed: int, cb: Any) -> tuple[Any, dict[str, int], Any]:
    """The TRL trainer for `method`, the data counts, and (GRPO only) the mixed-policy rollout."""
    render, ins = chat_render(tok), (data.insights if fc.include_insights else {})
    if method == "grpo":
        rng = random.Random(seed)
        prompts = build_grpo_prompts(data.episodes, data.chains, render, fc.grpo.max_prompts, rng, ins,
                                     examples=data.examples)
        trainer, rollout = make_grpo_trainer(model, tok, prompts, fc, fc.steps, work, verify, seed, [cb])
        return trainer, {"prompts": len(prompts),
                         "prompts_with_offpolicy": sum(p.offpolicy is not None for p in prompts)}, rollout
    if method == "sft":
        examples = build_sft_examples(data.episodes, data.chains, render, ins, data.examples)
        sources = {f"sft_from_{k}": sum(e.source == k for e in examples)
                   for k in ("trajectory", "chain", "example")}
        return make_sft_trainer(model, tok, examples, fc, fc.steps, work, seed, [cb]), {
            "sft_examples": len(examples)} | sources, None
    pairs = build_dpo_pairs(data.episodes, render, ins)
    trainer = make_dpo_trainer(model, tok, pairs, fc, fc.steps, work, seed, [cb])
    return trainer, {"dpo_pairs": len(pairs)}, None


def _warm_start(model: Any, tok: Any, data: FoldData, fc: FoldConfig, seed: int,
                on_event: OnFoldEvent | None) -> tuple[Any, int]:
    """Optional SFT on the verified chains and worked examples alone, before the main method."""
    examples = build_sft_examples([], data.chains, chat_render(tok), examples=data.examples)
    if not examples:
        return model, 0
    _stage(on_event, "warm_start_sft", fc.steps)
    with tempfile.TemporaryDirectory(prefix="insightloop-sft-") as work:
        trainer = make_sft_trainer(model, tok, examples, fc, fc.steps, work, seed,
                                   [_progress(on_event, "warm_start_sft", fc.steps)])
        trainer.train()
        return trained_model(trainer), len(examples)


def train(model: Any, tok: Any, data: FoldData, fc: FoldConfig, verify: VerifyFn, seed: int,
          on_event: OnFoldEvent | None = None) -> tuple[Any, dict[str, int], dict[str, float]]:
    """Run the configured method (after the optional warm start); return the trained plain model."""
    counts: dict[str, int] = {}
    if fc.warm_start_sft and fc.method != "sft":
        model, counts["warm_start_examples"] = _warm_start(model, tok, data, fc, seed, on_event)
    _stage(on_event, fc.method, fc.steps)
    with tempfile.TemporaryDirectory(prefix=f"insightloop-{fc.method}-") as work:
        cb = _progress(on_event, fc.method, fc.steps)
        trainer, more, rollout = _trainer(fc.method, model, tok, data, fc, work, verify, seed, cb)
        trainer.train()
        metrics = _metrics(trainer.state.log_history)
        if rollout is not None:
            metrics |= {"groups": float(rollout.groups), "offpolicy_joined": float(rollout.joined)}
        return trained_model(trainer), counts | more, metrics


def _live_backend(cfg: Config, path: str) -> Any:
    """A local backend on `path` (vllm if so configured, else hf) when the caller passes no live policy."""
    backend = "vllm" if cfg.policy.backend == "vllm" else "hf"
    return make_lm(cfg.policy.model_copy(update={"backend": backend, "model": path}))


def _settle(run_dir: str | Path, path: Path, result: GateResult, seconds: float) -> ck.Manifest:
    """Accept (CURRENT moves) or roll back (weights deleted, manifest kept with the verdict); either way
    the manifest records when and after how many seconds the fold was settled."""
    verdict = result.model_dump(exclude={"old_scores", "new_scores", "task_ids"})
    done = dict(gate=verdict, seconds=seconds, settled=time.time())
    if result.accepted:
        manifest = ck.update_manifest(path, status="accepted", **done)
        ck.set_current(run_dir, path)
        return manifest
    ck.discard_weights(path)
    return ck.update_manifest(path, status="rejected", **done)


def _retest(lm: Any, store: InsightStore, episodes: Sequence[Episode], cfg: Config) -> list[InsightRetest]:
    """Re-test the most used live insights on their source tasks; mark absorbed the unneeded ones."""
    tasks = {ep.task.id: ep.task for ep in episodes}
    live = [i for i in store.list_insights() if i.status == "active" and not i.absorbed]
    out = []
    for ins in sorted(live, key=lambda i: i.uses, reverse=True)[: cfg.fold.retest_insights]:
        own = [tasks[t] for t in ins.source_tasks if t in tasks][:4]
        if not own:
            continue
        res = retest_insight(lm, ins.id, ins.text, own, cfg)
        if res.absorbed:
            store.mark_absorbed(ins.id)
        out.append(res)
    return out


def _start_point(run_dir: str | Path, cfg: Config) -> tuple[str, str, str | None]:
    """(weights to train from, the original base model, the parent checkpoint folder or None)."""
    parent = ck.current(run_dir)
    if parent is None:
        return resolve_policy(cfg.policy.model), cfg.policy.model, None
    return str(parent), ck.read_manifest(parent).base_model, str(parent)


def fold(run_dir: str | Path, cfg: Config, method: Method | None = None, steps: int | None = None,
         lora: bool | None = None, lm: Any = None, on_event: OnFoldEvent | None = None, *,
         data: FoldData | None = None, verify: VerifyFn | None = None,
         store: InsightStore | None = None) -> FoldResult:
    """Fold the run's experience into the weights; see the module docstring for the whole sequence."""
    started = time.monotonic()
    given = {k: v for k, v in dict(method=method, steps=steps, lora=lora).items() if v is not None}
    fc = resolved(cfg.fold.model_copy(update=given))
    cfg = cfg.model_copy(update={"fold": fc})  # the gate and the re-test read the same settings
    data = without_held_out(data) if data is not None else load_fold_data(run_dir, cfg)
    if not data.validation:
        raise ValueError("no validation tasks: solve some problems into the run directory before folding")
    start_path, base, parent = _start_point(run_dir, cfg)
    _stage(on_event, "load")
    model, tok = load_policy(start_path)
    model, counts, metrics = train(model, tok, data, fc, verify or _default_verify(), cfg.seed, on_event)
    counts |= {"episodes": len(data.episodes), "chains": len(data.chains), "examples": len(data.examples),
               "validation": len(data.validation)}
    manifest = ck.Manifest(index=ck.next_index(run_dir), base_model=base, parent=parent, method=fc.method,
                           steps=fc.steps, lora=fc.lora, data_counts=counts, config=fc.model_dump(),
                           metrics=metrics)
    _stage(on_event, "checkpoint")
    path = ck.write_checkpoint(run_dir, model, tok, manifest)
    del model
    _stage(on_event, "gate", len(data.validation))
    lm = lm if lm is not None else _live_backend(cfg, start_path)
    ins = data.insights if fc.include_insights else {}
    result = gate(lm, start_path, path, data.validation, cfg, lambda t: ins.get(t.id, []))
    _settle(run_dir, path, result, time.monotonic() - started)
    retest = result.accepted and store is not None and fc.retest_insights > 0
    absorbed = _retest(lm, store, data.episodes, cfg) if retest else []
    out = FoldResult(index=manifest.index, checkpoint=str(path), accepted=result.accepted, method=fc.method,
                     steps=fc.steps, lora=fc.lora, parent=parent, data_counts=counts, metrics=metrics,
                     gate=result, absorbed=absorbed, seconds=time.monotonic() - started)
    if on_event is not None:
        on_event(FoldEvent(kind="fold_done", stage="accepted" if result.accepted else "rejected"))
    return out
