"""The run directory's lock: one daemon per `RUN_DIR`, recorded in `RUN_DIR/daemon.lock`.

The lock is an exclusive `flock` on the file plus the holder's pid written in it. The kernel drops a
flock when its holder dies, so a lock file left by a killed daemon is simply re-acquired; the pid
lets `insightloop status` tell whether the daemon that wrote status.json is still running.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from insightloop.core.errors import UserError

LOCK_FILE = "daemon.lock"


class DaemonLocked(UserError, RuntimeError):
    """Another daemon holds the run directory (the CLI exits 3)."""

    exit_code = 3


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal still counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`RUN_DIR/daemon.lock`: an exclusive `flock` plus the holder's pid.

    `acquire` returns a dead holder's pid when it re-acquires a lock left by a killed daemon, so the
    recovery can be logged.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> int | None:
        """Take the lock or raise `DaemonLocked`; returns the previous (dead) holder's pid, if any."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DaemonLocked(
                f"another insightloop daemon (pid {holder}) is already running on {self.path.parent} "
                f"(it holds {self.path}); stop it first (kill -TERM {holder}) or use another --run-dir"
            ) from None
        previous = os.read(fd, 64).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        stale = int(previous) if previous.isdigit() else None
        return stale if stale is not None and stale != os.getpid() else None

    def release(self) -> None:
        """Clear the pid and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def lock_holder(run_dir: Path) -> int | None:
    """The pid recorded in the run dir's lock file if that process is alive (without locking)."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and pid_alive(int(text)) else None
