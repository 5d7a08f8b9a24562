"""The Context of a harness run: what every method shares (policy, embedder, scratch space, a cache).

It is built once per run; everything heavy in it is loaded lazily, so a run of `none` alone never
loads the embedder, and a fake LM or a hashing embedder can be passed in for tests.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from insightloop.apps.runtime import Runtime
from insightloop.core.config import Config
from insightloop.core.lm import LM
from insightloop.evals.harness.records import RunSpec
from insightloop.memory.embed import Embedder


class Context:
    """Loaded once per run and shared by all methods: the policy, the embedder, a scratch folder.

    `cache` lets methods that share an identical, deterministic first stage (the rejection sampling
    of best-of-n and episodic-rag) compute it once; each method still charges its rollouts to its own
    budget. `closers` run at `close`, last registered first.
    """

    def __init__(
        self,
        cfg: Config,
        policy: LM | None = None,
        embedder: Embedder | None = None,
        workdir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda _msg: None,
    ):
        self.cfg = cfg
        self.runtime = Runtime(cfg, policy=policy, embedder=embedder, clock=clock)
        self._tmp = tempfile.TemporaryDirectory(prefix="insightloop-eval-") if workdir is None else None
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.clock = clock
        self.log = log
        self.cache: dict[tuple[Any, ...], Any] = {}
        self.closers: list[Callable[[], None]] = []
        self._scratch: list[Path] = []

    @property
    def policy(self) -> LM:
        return self.runtime.policy

    @property
    def embedder(self) -> Embedder:
        return self.runtime.embedder

    def scratch(self, run: RunSpec, method: str) -> Path:
        """A fresh folder for one method's run (memory store, episodes, checkpoints)."""
        slug = "".join(c if c.isalnum() else "_" for c in f"{run.suite}-{run.seed}-{method}")
        path = self.workdir / slug
        n = 0
        while path.exists():
            n += 1
            path = self.workdir / f"{slug}-{n}"
        path.mkdir(parents=True)
        self._scratch.append(path)
        return path

    def clear_scratch(self) -> None:
        """Remove the scratch folders of finished runs (checkpoints are hundreds of MB each)."""
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
