"""The driver's workers: N slots, each holding one live actor, and the calls running on them.

A `Pool` runs one call at a time per slot and reports each as `Finished`: with the call's value, or
with `crash` set when the actor died under it (a `kill -9`, an out-of-memory kill, a lost node) or
the call failed inside Ray. `replace` ends a slot's actor and starts a fresh one under a new name
(`w1`, then `w1.2`, ...). The policy — what to run where, when to replace — is the caller's.

`RayPool` is the Ray implementation; `LocalPool` runs the same worker objects in this process, one
call at a time, for tests and for the single-machine benchmark of the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class Finished(BaseModel):
    """A call that ended: its slot and key, and its value or why there is none."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    slot: int
    key: str
    value: Any = None
    crash: str | None = None


class Pool(Protocol):
    """Slots of workers, one call in flight per slot (see the module docstring)."""

    size: int

    def name(self, slot: int) -> str: ...

    def idle(self) -> list[int]: ...

    def submit(self, slot: int, key: str, method: str, *args: Any) -> None: ...

    def wait(self, timeout: float) -> list[Finished]: ...

    def replace(self, slot: int) -> None: ...

    def info(self, slot: int) -> Any: ...

    def close(self) -> None: ...


def _slot_name(slot: int, generation: int) -> str:
    return f"w{slot + 1}" if generation == 1 else f"w{slot + 1}.{generation}"


class RayPool:
    """Worker actors on Ray. `spawn(name, slot)` starts one; its `warm` is called at once (the
    models load while the driver goes on), and its `info` is fetched without blocking."""

    def __init__(self, size: int, spawn: Callable[[str, int], Any], kill: Callable[[Any], None]) -> None:
        import ray

        self.ray = ray
        self.size = size
        self._spawn, self._kill = spawn, kill
        self.generation = [0] * size
        self.actors: list[Any] = [None] * size
        self._info: list[Any] = [None] * size  # an ObjectRef until resolved, then the value
        self.jobs: dict[Any, tuple[int, str]] = {}  # ObjectRef -> (slot, key)
        for slot in range(size):
            self._start(slot)

    def _start(self, slot: int) -> None:
        self.generation[slot] += 1
        actor = self._spawn(self.name(slot), slot)
        self.actors[slot] = actor
        self._info[slot] = actor.warm.remote()

    def name(self, slot: int) -> str:
        return _slot_name(slot, self.generation[slot])

    def ready(self, timeout: float) -> list[Any]:
        """Wait until every worker has loaded its models; the first that could not raises here (a
        model that cannot load stops the start, as it stops the single-process daemon's)."""
        values = self.ray.get(list(self._info), timeout=timeout)
        self._info = list(values)
        return values

    def idle(self) -> list[int]:
        busy = {slot for slot, _ in self.jobs.values()}
        return [s for s in range(self.size) if s not in busy]

    def submit(self, slot: int, key: str, method: str, *args: Any) -> None:
        """Call `method(*args)` on the slot's actor; `key` names the call in its `Finished`."""
        ref = getattr(self.actors[slot], method).remote(*args)
        self.jobs[ref] = (slot, key)

    def wait(self, timeout: float) -> list[Finished]:
        """The calls that ended within `timeout` seconds (at least one, unless none did)."""
        if not self.jobs:
            return []
        refs = list(self.jobs)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # then whatever else is ready too, without waiting
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        return [self._collect(ref) for ref in ready]

    def _collect(self, ref: Any) -> Finished:
        slot, key = self.jobs.pop(ref)
        try:
            return Finished(slot=slot, key=key, value=self.ray.get(ref))
        except Exception as e:  # RayActorError (the process died), or Ray could not run the call
            first = " ".join(str(e).split())[:300]
            return Finished(slot=slot, key=key, crash=f"{type(e).__name__}: {first}")

    def replace(self, slot: int) -> None:
        """End the slot's actor (if it still lives) and start a fresh one; its call, if any, is
        dropped (the caller has it from the `Finished` that made it replace)."""
        for ref, (s, _) in list(self.jobs.items()):
            if s == slot:
                del self.jobs[ref]
        try:
            self._kill(self.actors[slot])
        except Exception:  # already gone: nothing to end
            pass
        self._start(slot)

    def info(self, slot: int) -> Any:
        """What the slot's actor said about itself once its models loaded (None until then)."""
        value = self._info[slot]
        if isinstance(value, self.ray.ObjectRef):
            ready, _ = self.ray.wait([value], timeout=0)
            if not ready:
                return None
            try:
                value = self.ray.get(value)
            except Exception:  # it died while loading; `wait` reports that with its next call
                value = None
            self._info[slot] = value
        return value

    def close(self) -> None:
        """End every actor (calls in flight are dropped)."""
        for actor in self.actors:
            try:
                self._kill(actor)
            except Exception:  # already gone
                pass
        self.jobs.clear()


class LocalPool:
    """The same protocol in this process: `make(name, slot)` builds a worker object; a call runs at
    `submit`, and `wait` returns it. A call that raises counts as a crash of its worker."""

    def __init__(self, size: int, make: Callable[[str, int], Any]) -> None:
        self.size = size
        self._make = make
        self.generation = [0] * size
        self.workers: list[Any] = [None] * size
        self.done: list[Finished] = []
        self.busy: set[int] = set()
        for slot in range(size):
            self._start(slot)

    def _start(self, slot: int) -> None:
        self.generation[slot] += 1
        self.workers[slot] = self._make(self.name(slot), slot)

    def name(self, slot: int) -> str:
        return _slot_name(slot, self.generation[slot])

    def idle(self) -> list[int]:
        return [s for s in range(self.size) if s not in self.busy]

    def submit(self, slot: int, key: str, method: str, *args: Any) -> None:
        """Run the call now; `wait` hands it back."""
        self.busy.add(slot)
        try:
            value = getattr(self.workers[slot], method)(*args)
            self.done.append(Finished(slot=slot, key=key, value=value))
        except Exception as e:  # in-process stand-in for a worker process dying under its call
            self.done.append(Finished(slot=slot, key=key, crash=f"{type(e).__name__}: {e}"))

    def wait(self, timeout: float) -> list[Finished]:
        """Every call run since the last `wait` (there is nothing to wait for in-process)."""
        out, self.done = self.done, []
        for f in out:
            self.busy.discard(f.slot)
        return out

    def replace(self, slot: int) -> None:
        """A fresh worker object in the slot; its finished call, if any, is dropped."""
        self.busy.discard(slot)
        self.done = [f for f in self.done if f.slot != slot]
        self._start(slot)

    def info(self, slot: int) -> Any:
        worker = self.workers[slot]
        return worker.info() if hasattr(worker, "info") else None

    def close(self) -> None:
        """Close every worker that can be closed."""
        for worker in self.workers:
            if hasattr(worker, "close"):
                worker.close()
