"""A model's context window, known before the model loads, and the prompt limit it sets.

`context_window(cfg)` reads the context length from the model's config (`max_position_embeddings`:
8192 for the embedded SmolLM2, read from the GGUF file's metadata until its first conversion) and
counts tokens with the model's own tokenizer, loaded on the first count: tokenizer files only,
never weights. A model whose context cannot be read locally (an API model, a hub id that is not in
the local cache) has no window, and prompts for it are not checked here.

`PromptLimit` is what a task's prompt may hold: the context less what a search adds to it (the chat
template, retrieved insights, reasoning steps, the answer). Checking is cheap: a prompt with no more
UTF-8 bytes than the limit fits whatever the tokenizer does (a token covers at least one byte), so
only long prompts are tokenized, and a huge one only in part, its count extrapolated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from insightloop.core.config import Config, ModelConfig
from insightloop.core.errors import UserError
from insightloop.core.models import converted_policy_folder, embedded_gguf_path
from insightloop.core.task import Task

TEMPLATE_TOKENS = 64  # the chat template's role markers around the prompt
EXACT_CHARS = 400_000  # longer prompts are counted on this prefix (tokenizing 10 MB takes seconds)
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")

Counter = Callable[[str], int]


class PromptTooLong(UserError):
    """A task's prompt does not fit the model's context with what a search adds to it."""


class ContextWindow:
    """A context length in tokens and a token counter, whose tokenizer loads on the first count."""

    def __init__(self, length: int, load_counter: Callable[[], Counter]) -> None:
        self.length = length
        self._load = load_counter
        self._count: Counter | None = None

    def count(self, text: str) -> tuple[int, bool]:
        """Tokens in `text`, and whether the count is exact (False: extrapolated from a prefix)."""
        if self._count is None:
            self._count = self._load()
        if len(text) <= EXACT_CHARS:
            return self._count(text), True
        return round(self._count(text[:EXACT_CHARS]) * len(text) / EXACT_CHARS), False


def _tokenizer_counter(name: str, **kwargs: Any) -> Callable[[], Counter]:
    """A loader of the tokenizer at `name` (a folder, or a hub id with `local_files_only`)."""

    def load() -> Counter:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name, **kwargs)
        # verbose=False: a prompt longer than the model is exactly what is being measured, not news
        return lambda text: len(tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    return load


def config_length(config: dict[str, Any]) -> int | None:
    """The context length a transformers `config.json` states (its text part's, for multimodal ones)."""
    for section in (config, config.get("text_config") or {}):
        for key in CONTEXT_KEYS:
            value = section.get(key) if isinstance(section, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _folder_window(folder: Path, name: str, **kwargs: Any) -> ContextWindow | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    length = config_length(config) if isinstance(config, dict) else None
    return None if length is None else ContextWindow(length, _tokenizer_counter(name, **kwargs))


def _gguf_window(path: Path) -> ContextWindow | None:
    """The window of a GGUF file: `<architecture>.context_length` in its metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    arch = fields.get("general.architecture")
    if arch is None:
        return None
    length = fields.get(f"{bytes(arch.parts[arch.data[0]]).decode()}.context_length")
    if length is None:
        return None
    return ContextWindow(int(length.parts[length.data[0]][0]),
                         _tokenizer_counter(str(path.parent), gguf_file=path.name))


def _hub_window(model_id: str) -> ContextWindow | None:
    """A hub id's window when its files are in the local cache (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, "config.json")
    except ValueError:  # not a well-formed hub id
        return None
    if not isinstance(found, str):
        return None
    return _folder_window(Path(found).parent, model_id, local_files_only=True)


def context_window(cfg: ModelConfig) -> ContextWindow | None:
    """The policy's context window, or None when it cannot be known before calling the model."""
    if cfg.backend == "litellm":
        return None  # the server's model: its context is the server's business
    if cfg.model == "embedded":
        folder = converted_policy_folder()
        return _folder_window(folder, str(folder)) if folder is not None else _gguf_window(embedded_gguf_path())
    folder = Path(cfg.model).expanduser()
    if folder.is_dir():
        return _folder_window(folder, str(folder))
    return _hub_window(cfg.model)


def search_reserve(cfg: Config) -> int:
    """Tokens a search may add to a prompt: the template, a system prompt, insights, steps, the answer."""
    s = cfg.search
    steps = s.max_depth * s.step_tokens if s.strategy == "mcts" else 0
    system = len((cfg.policy.system_prompt or "").encode("utf-8"))  # at most one token per byte
    return TEMPLATE_TOKENS + system + cfg.memory.prompt_token_budget + steps + s.answer_tokens


class PromptLimit:
    """The longest prompt a task may have under a config; `window` None checks nothing."""

    def __init__(self, window: ContextWindow | None, reserve: int) -> None:
        self.window = window
        self.reserve = reserve

    @property
    def tokens(self) -> int | None:
        """The most tokens a prompt may have (None: unknown, unchecked)."""
        return None if self.window is None else self.window.length - self.reserve

    def problem(self, task: Task) -> str | None:
        """Why `task`'s prompt does not fit, or None when it does."""
        limit = self.tokens
        if self.window is None or limit is None or len(task.prompt.encode("utf-8")) <= limit:
            return None
        n, exact = self.window.count(task.prompt)
        if n <= limit:
            return None
        return (f"prompt of task {task.id!r} has {'' if exact else 'about '}{n} tokens; the model's context is "
                f"{self.window.length} (a prompt may have at most {max(limit, 0)} tokens: a search adds up to "
                f"{self.reserve} for the chat template, insights, reasoning steps and the answer); shorten the "
                "prompt or leave the task out")

    def check(self, tasks: Iterable[Task]) -> None:
        """Raise `PromptTooLong` for the first task whose prompt does not fit."""
        for task in tasks:
            problem = self.problem(task)
            if problem is not None:
                raise PromptTooLong(problem)
