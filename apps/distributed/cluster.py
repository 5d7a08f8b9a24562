"""Ray, and only here: connecting the driver, and starting the writer, the workers and tasks.

Ray is imported on first use (`ray_module`), so nothing on the single-process path ever imports it.
`RaySession` joins the cluster at `address`, or starts a local Ray runtime: on the loopback
interface only (Ray's single-machine mode, the one it uses on macOS), without the dashboard or
usage reporting, with `num_cpus` logical CPUs and a small object store. It installs nothing else:
the cluster's nodes must have this package installed, and the run directory must be on the
driver's node (the writer and, on a CPU, the fold run there) or on storage every node shares.

`spawn_writer` starts the memory writer as one actor pinned to the driver's node (Ray cannot call
into a driver process, so the writer is the one actor that owns the memory); `spawn` starts a worker
with its reserved CPUs and GPUs (`spawn_worker`: an episode worker with a transport to the writer);
`submit_fold` runs a fold as a task.
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType
from typing import Any

from insightloop.apps.distributed.folding import fold_job
from insightloop.apps.distributed.protocol import Reply, Request, WriteBatch
from insightloop.apps.distributed.worker import EpisodeWorker
from insightloop.apps.distributed.writer import MemoryService
from insightloop.core.config import Config, RayConfig
from insightloop.core.errors import UserError

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode (loopback only)
NAMESPACE = "insightloop"


def ray_module(local: bool = False) -> ModuleType:
    """Ray, imported now. For a local runtime, its single-machine mode is switched on first: Ray
    reads the switch when it is imported, and it makes every Ray process listen on 127.0.0.1."""
    if local:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    return ray


class RayOptionError(UserError):
    """`--ray-address` without workers, or Ray not installed."""


def requested_workers(rcfg: RayConfig, workers: int | None, address: str | None) -> int:
    """The workers a command asked for: `--workers`, else `ray.workers`; 0 keeps the single process.
    Refuses a cluster address with no workers to run there, and a missing Ray, before anything starts."""
    n = rcfg.workers if workers is None else workers
    if n == 0 and address:
        raise RayOptionError("--ray-address needs workers to run there: add --workers N (or set ray.workers)")
    if n and importlib.util.find_spec("ray") is None:
        raise RayOptionError("--workers needs Ray: pip install 'insightloop[ray]' (or: pip install ray)")
    return n


def server_for(cfg: Config, slot: int) -> Config:
    """The config of the worker in `slot`: with `ray.api_bases`, its policy calls server slot mod n."""
    bases = cfg.ray.api_bases
    if not bases:
        return cfg
    return cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"api_base": bases[slot % len(bases)]})})


def local_cpus(rcfg: RayConfig, workers: int) -> int:
    """Logical CPUs of a local runtime: the workers' reservations plus one for a fold."""
    if rcfg.num_cpus is not None:
        return rcfg.num_cpus
    return int(workers * rcfg.worker_cpus + 0.999) + 1


class RaySession:
    """The driver's connection to Ray, as a context manager (`shutdown` on exit)."""

    def __init__(self, rcfg: RayConfig, workers: int, address: str | None = None) -> None:
        self.rcfg = rcfg
        self.address = address if address is not None else rcfg.address
        self.local = self.address is None
        self.ray = ray_module(local=self.local)
        if self.local:
            # "local": a new runtime even when RAY_ADDRESS names a cluster (that is what --ray-address is for)
            self.ray.init(address="local", num_cpus=local_cpus(rcfg, workers),
                          object_store_memory=rcfg.object_store_mb * 2**20, include_dashboard=False,
                          log_to_driver=False, namespace=NAMESPACE)
        else:
            self.ray.init(address=self.address, log_to_driver=False, namespace=NAMESPACE)

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Leave the cluster; a local runtime stops, with every actor and task of this run."""
        if self.ray.is_initialized():
            self.ray.shutdown()

    def gpus(self) -> float:
        """GPUs in the whole cluster."""
        return float(self.ray.cluster_resources().get("GPU", 0.0))

    def here(self) -> Any:
        """A scheduling strategy that places an actor or task on the driver's own node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id=self.ray.get_runtime_context().get_node_id(), soft=False)

    def spawn_writer(self, run_dir: Path, cfg: Config) -> Any:
        """The memory writer actor, on the driver's node, ready (its store open) when this returns."""
        actor = self.ray.remote(WriterActor).options(num_cpus=0, max_restarts=0, scheduling_strategy=self.here())
        handle = actor.remote(str(run_dir), cfg)
        self.ray.get(handle.ping.remote(), timeout=cfg.ray.call_timeout_s)
        return handle

    def spawn(self, cls: type, cfg: Config, *args: Any, **kwargs: Any) -> Any:
        """An actor of `cls(*args, **kwargs)` holding a worker's CPUs and GPUs (`ray.worker_cpus`,
        `ray.worker_gpus`); one call at a time, never restarted by Ray (the driver replaces it)."""
        r = cfg.ray
        actor = self.ray.remote(cls).options(num_cpus=r.worker_cpus, num_gpus=r.worker_gpus, max_restarts=0,
                                             max_concurrency=1)
        return actor.remote(*args, **kwargs)

    def spawn_worker(self, name: str, cfg: Config, writer: Any, slot: int) -> Any:
        """An episode worker actor writing through `writer` (its models load on its first call)."""
        mine = server_for(cfg, slot)
        transport = RayTransport(writer, cfg.ray.call_timeout_s)
        return self.spawn(EpisodeWorker, mine, mine, name, transport, seed=cfg.seed * 1000 + slot)

    def submit_fold(self, run_dir: Path, cfg: Config, writer: Any) -> Future:
        """One fold as a Ray task: with a GPU when the cluster has one (or as `ray.fold_gpus` says),
        else on a CPU of the driver's node, where the run directory is."""
        gpus = cfg.ray.fold_gpus if cfg.ray.fold_gpus is not None else (1.0 if self.gpus() > 0 else 0.0)
        options: dict[str, Any] = {"num_cpus": 1, "num_gpus": gpus, "max_retries": 0}
        if not gpus:
            options["scheduling_strategy"] = self.here()
        task = self.ray.remote(fold_job).options(**options)
        return task.remote(str(run_dir), cfg, RayTransport(writer, cfg.ray.call_timeout_s)).future()

    def kill(self, handle: Any) -> None:
        """End an actor now (its process with it); it is not restarted."""
        self.ray.kill(handle, no_restart=True)


class WriterActor(MemoryService):
    """The memory writer as Ray builds it: from the run directory and the config, in its process."""

    def __init__(self, run_dir: str, cfg: Config) -> None:
        service = MemoryService.open(run_dir, cfg)
        super().__init__(service.store)


class RayTransport:
    """A worker's exchanges with the writer actor (a picklable callable: it travels to the worker)."""

    def __init__(self, writer: Any, timeout_s: float) -> None:
        self.writer = writer
        self.timeout_s = timeout_s

    def __call__(self, batch: WriteBatch | None, request: Request | None) -> Reply:
        import ray

        return ray.get(self.writer.exchange.remote(batch, request), timeout=self.timeout_s)
