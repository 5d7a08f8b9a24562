"""Configuration: one pydantic class per component, nested in `Config`; YAML files load into it.

`load_config(path, overrides)` reads a YAML file (or the bundled `default.yaml`), applies
`key.sub=value` overrides, and validates. Errors name the key, the bad value and what is allowed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    max_batch: int = Field(16, ge=1)
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    system_prompt: str | None = None
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)


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
    prefix_reuse: bool = True
    seed: int = 0


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


class LoopConfig(Strict):
    """The CORE learning loop."""

    baseline_samples: int = Field(2, ge=0)
    pairs: int = Field(10, ge=1)
    hard_fraction: float = Field(0.7, ge=0, le=1)
    analyst_retries: int = Field(2, ge=0)
    max_candidates: int = Field(3, ge=1)
    synthesize: bool = True
    fold_every: int | None = Field(None, ge=1, description="fold into weights every N episodes")


class FoldConfig(Strict):
    """Folding into weights with TRL."""

    method: Literal["grpo", "sft", "dpo"] = "grpo"
    steps: int = Field(8, ge=1)
    lr: float = Field(5e-6, gt=0)
    batch_size: int = Field(4, ge=1)
    group_size: int = Field(4, ge=2)
    max_completion_tokens: int = Field(128, ge=8)
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    beta: float = Field(0.1, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=0.5)
    sft_weight: float = Field(1.0, ge=0)
    include_insights: bool = False
    mix_offpolicy: bool = True
    gate_slice: int = Field(16, ge=1)
    gate_tolerance: float = Field(0.05, ge=0)


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


class Config(Strict):
    """The whole configuration. `analyst` defaults to the policy model when unset."""

    policy: ModelConfig = Field(default_factory=ModelConfig)
    analyst: ModelConfig | None = None
    search: SearchConfig = Field(default_factory=SearchConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    fold: FoldConfig = Field(default_factory=FoldConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    seed: int = 0


class ConfigError(ValueError):
    """A config file or override is wrong; the message says how to fix it."""


def _set_path(data: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is a value, not a section")
    node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; remove it or check its spelling")
        else:
            lines.append(f"  {loc} = {e.get('input')!r}: {e['msg']}")
    return ConfigError("\n".join(lines))


def bundled_config_path(name: str) -> Path:
    """Path of a YAML file shipped in `insightloop.configs`."""
    return Path(str(resources.files("insightloop.configs").joinpath(name)))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (default: bundled default.yaml), apply `key=value` overrides, validate."""
    src = Path(path) if path else bundled_config_path("default.yaml")
    if not src.exists():
        raise ConfigError(f"config file not found: {src}")
    try:
        data = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{src} is not valid YAML: {e}") from e
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
