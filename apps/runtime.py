"""The runtime factory: every part a command needs, built from one config and one run directory.

`Runtime(cfg, run_dir)` builds each part lazily and once: the policy and analyst LMs (the analyst is
the policy unless `analyst:` is set), the embedder on `memory.embed_device`, the memory store, and a
`Learner` wired to them, with a fold hook when `loop.fold_every` is set. Every command — solve,
adapt, eval, daemon, inspect, insights, bench — gets its parts here, so one setting means the same
thing everywhere. Parts can be passed in (a loaded policy reused across runs, a fake in a test), and
`wrap_lm` wraps every LM built here (the daemon's retrying guard). `prompt_limit` says, before the
policy loads, which task prompts its context cannot hold; every entry point that loads tasks checks
them there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from insightloop.agent.backends import make_lm
from insightloop.agent.backends.context import PromptLimit, context_window, search_reserve
from insightloop.agent.learn.loop import Folder, Learner
from insightloop.core import events as ev
from insightloop.core.config import Config
from insightloop.core.lm import LM
from insightloop.memory.embed import Embedder, make_embedder
from insightloop.memory.store import MemoryStore
from insightloop.rl.fold import fold


class Runtime:
    """Builds and caches one run's parts; `close()` closes what it opened."""

    def __init__(self, cfg: Config, run_dir: str | Path | None = None, *, policy: LM | None = None,
                 analyst: LM | None = None, embedder: Embedder | None = None,
                 wrap_lm: Callable[[LM], LM] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.clock = clock
        self._wrap = wrap_lm or (lambda lm: lm)
        self._given = {"policy": policy, "analyst": analyst, "embedder": embedder}
        self._stores: list[MemoryStore] = []

    @cached_property
    def policy(self) -> LM:
        given = self._given["policy"]
        return given if given is not None else self._wrap(make_lm(self.cfg.policy))

    @cached_property
    def prompt_limit(self) -> PromptLimit:
        """The longest task prompt the policy's context holds under this config, known without loading
        the policy. A policy passed in (a fake, or one loaded elsewhere) is not checked: the config
        may not describe it."""
        window = None if self._given["policy"] is not None else context_window(self.cfg.policy)
        return PromptLimit(window, search_reserve(self.cfg))

    @cached_property
    def analyst(self) -> LM:
        given = self._given["analyst"]
        if given is not None:
            return given
        return self.policy if self.cfg.analyst is None else self._wrap(make_lm(self.cfg.analyst))

    @cached_property
    def embedder(self) -> Embedder:
        given = self._given["embedder"]
        mem = self.cfg.memory
        return given if given is not None else make_embedder(mem.embedder, mem.embed_device)

    def memory(self, run_dir: str | Path | None = None, readonly: bool = False) -> MemoryStore:
        """Open the memory store of `run_dir` (default: this run's); closed by `close()`."""
        where = Path(run_dir) if run_dir is not None else self._need_run_dir()
        store = MemoryStore.open(where, self.embedder, self.cfg.memory, readonly=readonly)
        self._stores.append(store)
        return store

    def folder(self, store: MemoryStore, run_dir: str | Path | None = None, cfg: Config | None = None) -> Folder:
        """The fold hook for a learner: fold `run_dir`'s data into the live policy, gated."""
        where = Path(run_dir) if run_dir is not None else self._need_run_dir()
        fold_cfg = cfg or self.cfg

        def run_fold() -> tuple[bool, dict[str, Any]]:
            result = fold(where, fold_cfg, lm=self.policy, store=store)
            return result.accepted, {"checkpoint": result.checkpoint, "index": result.index,
                                     "method": result.method}

        return run_fold

    def learner(self, store: MemoryStore, *, run_dir: str | Path | None = None, cfg: Config | None = None,
                rng: random.Random | None = None, on_event: ev.EventSink = ev.ignore) -> Learner:
        """A learner on this runtime's policy and analyst over `store`; folds when `loop.fold_every` is set."""
        cfg = cfg or self.cfg
        where = Path(run_dir) if run_dir is not None else (store.run_dir or self.run_dir)
        folder = self.folder(store, where, cfg) if cfg.loop.fold_every and where is not None else None
        return Learner(self.policy, self.analyst, store, cfg, rng or random.Random(cfg.seed), on_event,
                       run_dir=where, fold=folder, clock=self.clock)

    def _need_run_dir(self) -> Path:
        if self.run_dir is None:
            raise ValueError("this runtime has no run directory; pass run_dir")
        return self.run_dir

    def close(self) -> None:
        for store in reversed(self._stores):
            store.close()
        self._stores.clear()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
