"""GEPA as an outside peer: the real `gepa.optimize`, through litellm, against the same model.

The policy model is served on 127.0.0.1 by `transformers serve` (a real OpenAI-compatible server,
started once per harness run on a free port and stopped at the end). GEPA's own `DefaultAdapter`
drives it through litellm (`openai/<model folder>` with `api_base`); the component it evolves is
the solver's system prompt, seeded with insightloop's own. Its evaluator is ours: the task's
verifier scores each response (GEPA's default one only checks that the answer string appears).
Every evaluator call is one rollout; GEPA is stopped before an iteration that could take it past
the budget, and the harness checks the count. Reflection calls cost tokens, not rollouts.

At test time the evolved prompt (if GEPA kept a change) goes into the same solver prompt the other
methods use, as one block after the format instructions, and is measured by `measure.evaluate`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from insightloop.agent.search.domain import SYSTEM_PROMPT
from insightloop.core.budget import Budget
from insightloop.core.lm import Generation
from insightloop.core.models import resolve_policy
from insightloop.core.task import Task
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.measure import evaluate
from insightloop.evals.harness.records import MethodResult, RunSpec
from insightloop.evals.verifiers import verify

COMPONENT = "system_prompt"
MINIBATCH = 3
REFLECTION_TOKENS = 160


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """`transformers serve` on 127.0.0.1 with one model folder; `stop()` ends it (and its children)."""

    def __init__(
        self,
        model_path: str,
        port: int | None = None,
        threads: int | None = None,
        log_path: str | Path | None = None,
    ):
        self.model_path = model_path
        self.port = port or free_port()
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        exe = Path(os.sys.executable).with_name("transformers")  # type: ignore[attr-defined]
        cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port), model_path]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self._log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=self._log, start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"transformers serve did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def shared_server(ctx: Context, model_path: str) -> LocalServer:
    """One server per harness run, stopped when the context closes."""
    key = ("gepa-server", model_path)
    if key not in ctx.cache:
        server = LocalServer(model_path, threads=ctx.cfg.policy.threads, log_path=ctx.workdir / "serve.log")
        server.wait_ready()
        ctx.cache[key] = server
        ctx.closers.append(server.stop)
    return ctx.cache[key]


class VerifierEvaluator:
    """GEPA's evaluator, backed by our verifiers; counts its calls (one call = one rollout)."""

    def __init__(self, tasks: list[Task]):
        self.tasks = {t.id: t for t in tasks}
        self.calls = 0
        self.correct = 0

    def __call__(self, data: dict[str, Any], response: str) -> Any:
        from gepa.adapters.default_adapter.default_adapter import EvaluationResult

        self.calls += 1
        task = self.tasks[data["additional_context"]["task_id"]]
        reward = verify(task, response or "")
        self.correct += int(reward.correct)
        if reward.correct:
            feedback = "The response is correct."
        else:
            why = f" ({reward.error})" if reward.error else ""
            feedback = (
                f"The response is incorrect{why}: it answered {reward.parsed_answer!r}, the correct answer "
                f"is {task.answer!r}. The response must end with a line 'Answer: <answer>'."
            )
        return EvaluationResult(score=reward.score, feedback=feedback)


class BudgetStopper:
    """Stops GEPA before an iteration whose worst case (two minibatches and a full validation pass)
    would take the metric calls past the rollout budget."""

    def __init__(self, budget: int, worst_iteration: int):
        self.budget = budget
        self.worst = worst_iteration

    def __call__(self, gepa_state: Any) -> bool:
        return gepa_state.total_num_evals + self.worst > self.budget


def data_of(task: Task) -> dict[str, Any]:
    return {"input": task.prompt, "additional_context": {"task_id": task.id}, "answer": task.answer or ""}


def optimize(
    run: RunSpec, api_base: str, model_path: str, budget: int, evaluator: VerifierEvaluator, workdir: Path
) -> tuple[str, Any, Generation]:
    """Run `gepa.optimize` on the training problems; return the best system prompt, the result,
    and the tokens GEPA's task and reflection calls used (as one `Generation` to charge)."""
    import gepa
    from gepa.adapters.default_adapter.default_adapter import DefaultAdapter
    from gepa.lm import LM as GepaLM

    model = f"openai/{model_path}"
    common = {"api_base": api_base, "api_key": "local", "timeout": 300}
    s = run.cfg.search
    adapter = DefaultAdapter(
        model=model,
        evaluator=evaluator,
        max_litellm_workers=2,
        litellm_batch_completion_kwargs={
            **common,
            "max_tokens": s.answer_tokens,
            "temperature": run.cfg.loop.eval_temperature,
        },
    )
    reflection = GepaLM(
        model, temperature=run.cfg.loop.analyst_temperature, max_tokens=REFLECTION_TOKENS, **common
    )
    data = [data_of(t) for t in run.train]
    mb = min(MINIBATCH, len(data))
    result = gepa.optimize(
        seed_candidate={COMPONENT: SYSTEM_PROMPT},
        trainset=data,
        valset=data,
        adapter=adapter,
        reflection_lm=reflection,
        reflection_minibatch_size=mb,
        stop_callbacks=[BudgetStopper(budget, 2 * mb + len(data))],
        run_dir=str(workdir / "gepa"),
        seed=run.seed,
        raise_on_exception=False,
        display_progress_bar=False,
    )
    lms = [lm for lm in (adapter._lm, reflection) if lm is not None]
    spent = Generation(
        text="",
        prompt_tokens=sum(lm.total_tokens_in for lm in lms),
        completion_tokens=sum(lm.total_tokens_out for lm in lms),
    )
    return str(result.best_candidate[COMPONENT]), result, spent


def run_gepa(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """GEPA on the training problems within the budget, then its best prompt on the test problems."""
    cap = budget.remaining_rollouts() or 0
    if cap < len(run.train):
        return MethodResult(report=evaluate(ctx, run), detail={"note": "budget below one validation pass"})
    model_path = resolve_policy(run.cfg.policy.model)
    server = shared_server(ctx, model_path)
    evaluator = VerifierEvaluator(run.train)
    best, result, spent = optimize(run, server.api_base, model_path, cap, evaluator, ctx.scratch(run, "gepa"))
    budget.charge([spent], rollouts=evaluator.calls)
    changed = best.strip() != SYSTEM_PROMPT.strip()
    report = evaluate(ctx, run, (lambda _t: [best]) if changed else None)
    return MethodResult(
        report=report,
        detail={
            "metric_calls": evaluator.calls,
            "train_correct": evaluator.correct,
            "candidates": len(result.candidates),
            "prompt_changed": changed,
            "best_prompt": best[:2000],
            "val_scores": [round(float(x), 4) for x in result.val_aggregate_scores],
        },
    )
