"""FAISS as the memory uses it: the module with its process-wide settings, OpenMP threads, GPUs.

`faiss()` imports the library once and fixes its BLAS switch-over. `usable_cpus()` counts the CPUs
this process may really run on (affinity mask and cgroup quota, which OpenMP's own default ignores:
in a container limited to 2 CPUs on a 64-core host it would start 64 threads). `use_threads(n)` sets
the OpenMP team size, calling into OpenMP only on a change.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

_BLAS_THRESHOLD = 20
_threads: dict[str, int] = {}


def faiss() -> Any:
    """The faiss module, with the classic BLAS threshold (see the comment inside)."""
    import faiss as lib

    # Recent faiss builds raised the query count at which flat search switches to BLAS to 128000,
    # which leaves batched searches 10-20x slower than a matrix product; use the classic 20.
    if lib.cvar.distance_compute_blas_threshold > _BLAS_THRESHOLD:
        lib.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD
    return lib


def _cgroup_cpus() -> int | None:
    """The CPU quota of this process's cgroup (v2 `cpu.max`, else v1 CFS), rounded up; None if unlimited."""
    root = Path("/sys/fs/cgroup")
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota and by an explicit
    OMP_NUM_THREADS (the user's choice wins)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        count = min(count, quota)
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        count = min(count, int(env))
    return max(1, count)


def use_threads(n: int) -> None:
    """Set faiss's OpenMP thread count, calling into OpenMP only on a change, since even a no-op
    change costs about as much as a small search."""
    want = max(1, n)
    if _threads.get("current") != want:
        faiss().omp_set_num_threads(want)
        _threads["current"] = want


def gpu_count() -> int:
    """GPUs faiss can use (0 without a GPU build of faiss)."""
    lib = faiss()
    if not hasattr(lib, "StandardGpuResources"):
        return 0
    return int(lib.get_num_gpus())
