"""Configuration: one pydantic class per component, nested in `Config`; YAML files load into it.

`load_config(path, overrides)` reads a YAML file (or the bundled `default.yaml`), applies
`key.sub=value` overrides, and validates. Errors name the key, the bad value and what is allowed.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from insightloop.core.errors import UserError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SHOWN_VALUE_CHARS = 60  # a bad value is quoted in an error up to this length, so the error stays one line


def _is_number(annotation: Any) -> bool:
    """Whether a field holds a number (`int`, `float`, optionally `| None`)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


class Strict(BaseModel):
    """A config section: unknown keys, infinite or NaN numbers and booleans for numbers are refused.

    YAML reads `.inf`, `1e400` (as a float too large to hold) and `true` as values pydantic would
    accept as inf and 1; none of them is a setting anyone means, so they are errors that name the key.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_number(field.annotation):
            raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        return value


class ModelConfig(Strict):
    """Which LM serves as policy (or analyst). `model` is `embedded` for SmolLM2, a local path,
    a hub id (hf/vllm, must be cached locally), or a litellm model string (`openai/<name>`)."""

    backend: Literal["hf", "litellm", "vllm"] = "hf"
    model: str = "embedded"
    api_base: str | None = None
    api_key_env: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    threads: int | None = Field(None, ge=1)
    max_batch: int = Field(32, ge=1, description="rows decoded together (hf); refilled as rows finish")
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    system_prompt: str | None = None
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    prefix_reuse: bool = Field(True, description="hf: reuse the key/value cache of shared prompt prefixes")
    prepack: bool = Field(True, description="hf on a CPU in fp32: multiply with oneDNN-packed copies of the "
                          "linear weights (faster at decoding batch sizes; the weights' memory twice)")
    prefix_cache_tokens: int = Field(8192, ge=0, description="hf: LRU capacity of cached prefixes, in tokens")
    assistant_prefix_mode: Literal["user", "continue"] = Field(
        "user",
        description="litellm: 'user' restates the partial answer in the last user turn (any chat server); "
        "'continue' sends it as a final assistant message with continue_final_message (vLLM, SGLang)",
    )


class SearchConfig(Strict):
    """How a task is solved: MCTS over reasoning steps, or N independent samples."""

    strategy: Literal["mcts", "sample"] = "mcts"
    width: int = Field(3, ge=1)
    rollouts: int = Field(8, ge=1, description="rollout budget per task")
    max_depth: int = Field(4, ge=1)
    step_tokens: int = Field(64, ge=1)
    answer_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.8, ge=0)
    c_uct: float = Field(1.4, ge=0)
    seed: int = 0
    parallel_tasks: int = Field(32, ge=1, description="tasks searched at once, sharing the backend's batch")
    answer_mode: Literal["free", "choose"] = Field(
        "choose", description="choose: where the task has a closed answer set (yes/no, option letters) and "
        "the backend can score, the answer after 'Answer:' is the option of highest likelihood; free: as written")
    calibrate: bool = Field(False, description="with answer_mode=choose, divide each option's likelihood by its "
                            "likelihood after a content-free input ('N/A' for the problem): contextual "
                            "calibration of the label prior (Zhao et al. 2021)")


class MemoryConfig(Strict):
    """Insight memory: embedder, retrieval and lifecycle."""

    embedder: str = "embedded"
    top_k: int = Field(5, ge=0)
    neighbours: int = Field(8, ge=1)
    prompt_token_budget: int = Field(400, ge=0)
    ucb_c: float = Field(0.5, ge=0)
    dedup_threshold: float = Field(0.92, gt=0, le=1)
    max_insight_chars: int = Field(400, ge=20)
    retire_min_uses: int = Field(6, ge=1)
    retire_z: float = Field(1.64, ge=0)
    candidates: int = Field(64, ge=1, description="insights taken by text similarity per query")
    sim_weight: float = Field(0.5, ge=0, description="weight of text similarity (uncredited insights)")
    prior_uses: float = Field(1.0, gt=0, description="pseudo-uses before utility outweighs similarity")
    min_score: float | None = Field(0.0, description="retrieve only insights scoring above this")
    embed_device: str = Field("cpu", description="embedder device: cpu, cuda or auto")
    use_gpu_index: bool = Field(True, description="search on a GPU when faiss-gpu sees one (exact index only)")
    max_sources: int = Field(50, ge=1, description="source episode / task ids kept per insight")
    hnsw_threshold: int = Field(
        20_000, ge=1, description="insight vectors from which the index is an HNSW graph (approximate, "
        "under 2 ms a query at 100k) instead of exact search (linear in the count: ~15 ms at 100k). Built "
        "by a writer; a read-only opener uses the saved graph or else searches exactly")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW links per vector: higher recall, more memory "
                        "(8·m bytes a vector) and slower insertion")
    hnsw_ef_construction: int = Field(40, ge=8, description="HNSW candidate list while inserting: graph "
                                      "quality against build time")
    hnsw_ef_search: int = Field(512, ge=1, description="HNSW candidate list per query (k if larger): "
                                "recall against latency")
    hnsw_max_dead: float = Field(0.2, gt=0, le=1, description="fraction of removed vectors still in the "
                                 "HNSW graph at which it is rebuilt without them")
    index_threads: int = Field(0, ge=0, description="faiss OpenMP threads for index builds and batched "
                               "searches (0: the CPUs this process may use); a single query uses one")


class LoopConfig(Strict):
    """The CORE learning loop."""

    baseline_samples: int = Field(2, ge=0)
    pairs: int = Field(10, ge=1)
    hard_fraction: float = Field(0.7, ge=0, le=1)
    analyst_retries: int = Field(2, ge=0)
    max_candidates: int = Field(3, ge=1)
    synthesize: bool = True
    fold_every: int | None = Field(None, ge=1, description="fold into weights every N episodes")
    analyst_format: Literal["auto", "json", "lines"] = Field(
        "auto", description="analyst reply format; auto: lines for the embedded model, else JSON with a "
        "lines fallback")
    analyst_tokens: int = Field(160, ge=16, description="max tokens of one analyst reply")
    analyst_temperature: float = Field(0.3, ge=0)
    eval_samples: int = Field(1, ge=1, description="attempts per evaluation problem (score = mean)")
    eval_temperature: float = Field(0.0, ge=0, description="0: greedy, a deterministic paired measurement")
    admission_temperature: float | None = Field(
        None, ge=0, description="temperature of the admission try; unset: eval_temperature")
    curate: bool = Field(True, description="turn training episodes into memory items (contrast, analyst, "
                         "admission); off: an episode only credits the items it used and keeps its verified "
                         "attempts, the data a fold learns from (a cheap online learner on a CPU)")
    examples: bool = Field(True, description="learn worked examples (a problem and a short verified solution) "
                           "from correct attempts and verified synthesized chains, beside rules")
    example_chars: int = Field(600, ge=50, description="longest worked-example solution kept, in characters")
    admission: Literal["paired", "source"] = Field(
        "paired", description="paired: a candidate must raise the likelihood of verified solutions of the "
        "training problems (with vs without it, per problem); source: one try on its source problem (CORE)")
    admission_problems: int = Field(8, ge=1, description="training problems a paired admission test scores")
    admission_reference: Literal["solution", "answer"] = Field(
        "solution", description="what the paired test scores on each training problem: its shortest verified "
        "solution (reasoning and answer line), or only its answer line (the decision, without reasoning)")
    admission_min_gain: float = Field(0.02, description="least mean gain, in nats per reference token")
    admission_level: float = Field(0.9, gt=0.5, lt=1, description="a candidate is admitted only when the "
                                   "one-sided bootstrap bound of its mean gain at this level is above zero")
    analyst_drafts: int = Field(3, ge=1, description="candidate rules sampled per contrast pair")
    round_size: int = Field(5, ge=1, description="training tasks searched together per round (one batch), "
                            "then learned from in turn; 1 is CORE's one episode at a time")


class GRPOFoldConfig(Strict):
    """`fold.grpo`: mixed-policy GRPO, the verifier as reward (trainer: `rl.grpo.make_grpo_trainer`)."""

    group_size: int = Field(4, ge=2, description="completions sampled per prompt")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    kl_beta: float = Field(0.0, ge=0, description="KL weight (0: no reference model)")
    max_prompts: int = Field(64, ge=1, description="prompts drawn per fold")
    use_vllm: bool = Field(False, description="generation through vLLM (GPU only)")
    mix_offpolicy: bool = Field(True, description="a verified chain joins each all-wrong group")


class DPOFoldConfig(Strict):
    """`fold.dpo`: conservative DPO plus an SFT term (trainer: `rl.dpo.make_dpo_trainer`)."""

    beta: float = Field(0.1, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=0.5, description="above 0 selects TRL's robust loss")
    sft_weight: float = Field(1.0, ge=0, description="weight of the SFT term (0: DPO alone)")
    max_length: int = Field(1024, ge=32, description="token cap per example (prompt and continuation)")


class SFTFoldConfig(Strict):
    """`fold.sft`: supervised folding on correct texts; also the warm start before GRPO or DPO
    (trainer: `rl.sft.make_sft_trainer`)."""

    max_length: int = Field(1024, ge=32, description="token cap per example (prompt and completion)")


# Keys that sat flat on `fold` before each method had its own section, and where they live now.
MOVED_FOLD_KEYS: dict[str, tuple[str, ...]] = {
    **{k: (f"fold.grpo.{k}",) for k in ("group_size", "temperature", "kl_beta", "max_prompts", "use_vllm",
                                        "mix_offpolicy")},
    **{k: (f"fold.dpo.{k}",) for k in ("beta", "label_smoothing", "sft_weight")},
    "max_length": ("fold.sft.max_length", "fold.dpo.max_length"),
}


def _moved_message(keys: list[str]) -> str:
    moves = "; ".join(f"fold.{k} is now {' and '.join(MOVED_FOLD_KEYS[k])}" for k in keys)
    example = MOVED_FOLD_KEYS[keys[0]][0]
    return (f"{moves}. Each method has its own section under fold (grpo, dpo, sft): in YAML nest the key "
            f"there, on the command line write --set {example}=VALUE")


class FoldConfig(Strict):
    """Folding into weights with TRL: the settings all methods share, and one section per method.

    `method` chooses the trainer; its section (`grpo`, `dpo` or `sft`) holds what only it reads. The
    optional warm start before GRPO or DPO is an SFT run and uses `sft`.
    """

    method: Literal["grpo", "sft", "dpo"] = "grpo"
    steps: int = Field(8, ge=1, description="optimizer steps of the method (and of the optional warm start)")
    lr: float | None = Field(None, gt=0, description="learning rate; unset: 1e-4 under LoRA, 5e-6 for full "
                             "fine-tuning (adapters need the larger step)")
    batch_size: int = Field(4, ge=1, description="prompts (GRPO), examples (SFT) or pairs (DPO) per step")
    max_completion_tokens: int = Field(128, ge=8, description="GRPO: longest sampled completion, in tokens")
    lora: bool | None = Field(None, description="LoRA adapters, merged into the saved checkpoint, instead of "
                              "full fine-tuning; unset: LoRA when training runs on a CPU (no CUDA device)")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    include_insights: bool = False
    reference_answers: bool = Field(
        False, description="also learn each labeled training problem's reference answer, as an answer-only "
        "completion ('Step 1: Answer: <reference>'): supervision from the stream's labels, for a policy that "
        "verifies too few of its own attempts to learn from them; off: only what the loop verified")
    gate_slice: int = Field(64, ge=1, description="held-out problems the gate measures on (at most a third of "
                            "the run's problems, so small runs hold out fewer)")
    gate_rule: Literal["interval", "mcnemar", "margin"] = Field(
        "interval", description="how the paired before/after scores decide (`rl.verdict`): interval: the "
        "paired bootstrap interval of mean(new − old) at gate_level; mcnemar: McNemar's exact test at "
        "1 − gate_level; margin: the mean drop against max(gate_tolerance, gate_z standard errors)")
    gate_require: Literal["no_worse", "better"] = Field(
        "no_worse", description="no_worse: keep the fold unless it is worse beyond noise and by more than "
        "gate_tolerance; better: keep it only when it is better beyond noise")
    gate_level: float = Field(0.95, gt=0.5, lt=1, description="confidence of the interval / McNemar rules")
    gate_tolerance: float = Field(0.05, ge=0, description="a drop in held-out accuracy up to this is accepted "
                                  "(no_worse)")
    gate_z: float = Field(1.0, ge=0, description="margin rule: standard errors of the paired difference")
    gate_max_tokens: int = Field(256, ge=8)
    warm_start_sft: bool = Field(False, description="SFT on the verified chains before a GRPO or DPO fold")
    retest_insights: int = Field(0, ge=0, description="after an accepted fold, re-test N top insights")
    grpo: GRPOFoldConfig = Field(default_factory=GRPOFoldConfig)
    dpo: DPOFoldConfig = Field(default_factory=DPOFoldConfig)
    sft: SFTFoldConfig = Field(default_factory=SFTFoldConfig)

    @model_validator(mode="before")
    @classmethod
    def _reject_moved_keys(cls, data: Any) -> Any:
        """An old flat key (`fold.beta`) is refused with the key it moved to, never silently dropped."""
        moved = [k for k in data if k in MOVED_FOLD_KEYS] if isinstance(data, dict) else []
        if moved:
            raise ValueError(_moved_message(moved))
        return data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> FoldConfig:
        """As pydantic's, but an update naming no field raises (pydantic would set it unchecked)."""
        unknown = [k for k in update or {} if k not in type(self).model_fields]
        if unknown:
            moved = [k for k in unknown if k in MOVED_FOLD_KEYS]
            raise ValueError(_moved_message(moved) if moved else f"FoldConfig has no field {unknown[0]!r}")
        return super().model_copy(update=update, deep=deep)


class DaemonConfig(Strict):
    """The long-running daemon."""

    poll_seconds: float = Field(1.0, gt=0)
    status_every_s: float = Field(2.0, gt=0)
    practice_suites: list[str] = Field(default_factory=list)
    max_prompt_chars: int = Field(20000, ge=100)
    rollouts_per_hour: int | None = Field(None, ge=1)
    tokens_per_hour: int | None = Field(None, ge=1)
    usd_per_day: float | None = Field(None, ge=0)
    seconds_per_day: float | None = Field(None, ge=0)
    log_max_bytes: int = Field(5_000_000, ge=10_000)
    log_backups: int = Field(3, ge=1, description="rotated log files kept in RUN_DIR/logs/")
    max_file_bytes: int = Field(50_000_000, ge=100, description="inbox files larger than this are refused")
    inbox_settle_s: float = Field(0.5, ge=0, description="leave inbox files this recently modified alone")
    practice_limit: int | None = Field(200, ge=1, description="problems loaded per practice suite")
    mastery_streak: int = Field(2, ge=1, description="consecutive correct practice runs that retire a problem")
    accuracy_window: int = Field(50, ge=1, description="accuracy in status.json is over the last N scored tasks")
    lm_retries: int = Field(2, ge=0, description="retries of an LM batch whose generations all errored")
    lm_backoff_s: float = Field(1.0, ge=0, description="first wait between those retries (exponential, jitter)")
    backend_fail_after: int = Field(3, ge=1, description="consecutive all-error episodes that pause the daemon")
    backend_pause_s: float = Field(30.0, ge=0, description="first pause for a failing backend (doubles)")
    backend_pause_max_s: float = Field(900.0, ge=0)
    max_task_attempts: int = Field(3, ge=1, description="episodes raising on a task before it is failed")
    stop_grace_s: float = Field(3.0, ge=0, description="on SIGTERM, wait this long for a safe point")
    learn: bool = Field(True, description="learn from labeled inbox tasks after answering them (off: "
                        "answer only, e.g. a control run)")


class RayConfig(Strict):
    """Episodes on Ray workers (`insightloop daemon|eval --workers N`); unused by the single process.

    The driver keeps the run's state; one writer actor owns the memory; N worker actors run episodes,
    each with its own policy (hf) or calling shared generation servers (litellm with `api_base`).
    """

    workers: int = Field(0, ge=0, description="episode workers; 0: the single-process default (no Ray). "
                         "--workers overrides it")
    address: str | None = Field(None, description="a running cluster to join ('auto', 'HOST:6379'); unset: "
                                "start a local Ray runtime on the loopback interface. --ray-address overrides it")
    num_cpus: int | None = Field(None, ge=1, description="local runtime: logical CPUs (unset: workers × "
                                 "worker_cpus + 1, one spare for a fold)")
    object_store_mb: int = Field(200, ge=80, description="local runtime: the shared-memory object store, in MB")
    worker_cpus: float = Field(1.0, ge=0, description="CPUs each worker reserves")
    worker_gpus: float = Field(0.0, ge=0, description="GPUs each worker reserves (an hf policy on a GPU)")
    fold_gpus: float | None = Field(None, ge=0, description="GPUs a fold asks for; unset: 1 when the cluster "
                                    "has a GPU, else 0 (the fold runs on a CPU)")
    worker_fail_after: int = Field(3, ge=1, description="failed episodes in a row after which a worker is "
                                   "replaced by a fresh one")
    batch_ops: int = Field(64, ge=1, description="memory writes a worker buffers before it sends them")
    api_bases: list[str] = Field(default_factory=list, description="shared generation servers (OpenAI-"
                                 "compatible, litellm backend): worker i calls api_bases[i mod n] instead of "
                                 "policy.api_base, so N servers share the workers")
    call_timeout_s: float = Field(600.0, gt=0, description="longest wait for the memory writer's answer")


class Config(Strict):
    """The whole configuration. `analyst` defaults to the policy model when unset."""

    policy: ModelConfig = Field(default_factory=ModelConfig)
    analyst: ModelConfig | None = None
    search: SearchConfig = Field(default_factory=SearchConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    fold: FoldConfig = Field(default_factory=FoldConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    seed: int = 0


class ConfigError(UserError, ValueError):
    """A config file or override is wrong; the message says how to fix it."""


def _shown(value: Any) -> str:
    """`repr(value)`, cut to `SHOWN_VALUE_CHARS`."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 1] + "…"


def _yaml_problem(err: Exception) -> str:
    """What PyYAML found wrong, in one line (its own message spans several, with a caret)."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return " ".join(str(problem).split())


def _parse_value(dotted: str, raw: str) -> Any:
    """A `--set` value as YAML reads it (`''` is null); not YAML is an error naming the key."""
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(
            f"--set {dotted}: the value {_shown(raw)} is not valid YAML ({_yaml_problem(e)}); "
            f"quote it to pass it as text, e.g. --set '{dotted}=\"...\"'") from None


def _set_path(data: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is a value, not a section")
    node[keys[-1]] = _parse_value(dotted, raw)


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; remove it or check its spelling")
        elif e["type"] == "value_error":  # a validator's own message already says what to write
            lines.append(f"  {loc}: {e.get('ctx', {}).get('error', e['msg'])}")
        else:
            lines.append(f"  {loc} = {_shown(e.get('input'))}: {e['msg']}")
    return ConfigError("\n".join(lines))


def bundled_config_path(name: str) -> Path:
    """Path of a YAML file shipped in `insightloop.configs`."""
    return Path(str(resources.files("insightloop.configs").joinpath(name)))


def _read_text(src: Path) -> str:
    """The config file's text; a missing, unreadable or non-UTF-8 file is a `ConfigError`."""
    try:
        return src.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {src}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {src} is a directory; give the path of a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {src} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {src}: {e.strerror or e}") from None


def _read_yaml(src: Path) -> Any:
    """The config file parsed as YAML (an empty file is an empty mapping)."""
    text = _read_text(src)
    try:
        return yaml.safe_load(text) or {}
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{src} is not valid YAML: {e}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (default: bundled default.yaml), apply `key=value` overrides, validate."""
    src = Path(path) if path else bundled_config_path("default.yaml")
    data = _read_yaml(src)
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: the top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. search.rollouts=16")
        key, raw = item.split("=", 1)
        _set_path(data, key.strip(), raw.strip())
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise _explain(e, str(src)) from None
