"""`insightloop inspect` as a user runs it: a subprocess on a pseudo-terminal (readline prompt, Tab
completion, history), on plain piped input, and with `--command` for scripts."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from insightloop.core.config import MemoryConfig
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))
from test_console import build_real_run, make_episode  # noqa: E402  (shared with the layer tests)

CLI = str(Path(sys.executable).parent / "insightloop")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[=>]|\r")
PROMPT = "inspect> "


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "TERM": "xterm-256color", "COLUMNS": "150",
            "LINES": "50", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _terminal_session() -> None:
    """In the child: take the terminal as controlling tty and restore Ctrl-C's default, as a shell does
    for a foreground job. A test run started in the background (`cmd &` in a script) ignores SIGINT,
    and a child would inherit that: Python keeps an ignored SIGINT ignored, so Ctrl-C would do nothing."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class PtySession:
    """A process on a pseudo-terminal; `send` a line, `expect` text in the (ANSI-stripped) output."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 150, 0, 0))
        # A new session with the terminal as its controlling tty, so Ctrl-C becomes SIGINT as for a user.
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True, preexec_fn=_terminal_session)
        os.close(slave)
        self.raw = b""
        self.seen = 0

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _pump(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the child closed the terminal
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, needle: str, timeout: float = 60.0) -> str:
        """Wait until `needle` appears after the last match; returns the output up to it."""
        deadline = time.monotonic() + timeout
        while needle not in self.text[self.seen:]:
            if time.monotonic() > deadline or not self._pump(0.2):
                if needle in self.text[self.seen:]:
                    break
                raise AssertionError(f"{needle!r} not seen; output so far:\n{self.text[self.seen:][-3000:]}")
        end = self.text.index(needle, self.seen) + len(needle)
        out, self.seen = self.text[self.seen:end], end
        return out

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.master)


@pytest.fixture()
def small_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory written through the real store with the hashing embedder, and a config for it."""
    run = tmp_path / "run"
    with MemoryStore.open(run, HashingEmbedder(), MemoryConfig(embedder="hashing")) as store:
        ins, _ = store.add_insight("When asked for a sum, add the numbers.", "strategy", "", "arith",
                                   "ep000", "t0", "test", {})
        store.record_admission(ins.id, True, "solved its source problem")
        for n in range(3):
            store.add_episode(make_episode(n, n != 1, [(ins.id, ins.text)] if n else [], time.time()))
    config = tmp_path / "config.yaml"
    config.write_text("memory:\n  embedder: hashing\n")
    return run, config


def _interactive_session(run: Path, config: Path | None, tmp: Path) -> tuple[str, str]:
    """Drive a console: help, Tab completion, a command, history recall, an unknown id, Ctrl-C, quit."""
    args = [CLI, "inspect", "--run-dir", str(run)] + (["--config", str(config)] if config else [])
    session = PtySession(args, _env(tmp))
    try:
        session.expect(PROMPT, timeout=120)
        session.send("help\n")
        helped = session.expect(PROMPT)
        session.send("chec\t\n")  # Tab completes the command name
        session.expect("checkpoints")
        completed = session.expect(PROMPT)
        session.send("episodes\n")
        listed = session.expect(PROMPT)
        session.send("\x1b[A\n")  # the up arrow recalls the last command from the history
        recalled = session.expect(PROMPT)
        session.send("insight no-such-id\n")
        missing = session.expect(PROMPT)
        session.send("half a line\x03")  # Ctrl-C drops the line and keeps the console
        session.expect("interrupted")
        session.expect(PROMPT)
        session.send("quit\n")
        session.expect("bye")
        assert session.close() == 0
    finally:
        if session.proc.poll() is None:
            session.proc.kill()
    assert "insights [--sort" in helped and "checkpoints" in helped
    assert "no checkpoints" in completed
    assert "episodes" in recalled and recalled.count("reward") == listed.count("reward") >= 1
    assert "no insight 'no-such-id'" in missing and "Traceback" not in session.text
    history = (tmp / "cache" / "insightloop" / "inspect_history").read_text()
    assert "checkpoints" in history and "episodes" in history
    return listed, session.text


def test_pty_session_small_run(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, config = small_run
    listed, _ = _interactive_session(run, config, tmp_path)
    assert "ep002" in listed and "ep000" in listed


def test_piped_input_and_command_mode(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, config = small_run
    base = [CLI, "inspect", "--run-dir", str(run), "--config", str(config)]
    piped = subprocess.run(base, input="insights\nfrobnicate\n", capture_output=True, text=True,
                           env=_env(tmp_path), timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "When asked for a sum" in piped.stdout and "unknown command 'frobnicate'" in piped.stdout
    assert "inspect> insights\n" in piped.stdout  # the command is echoed, so the output reads as a transcript
    assert piped.stdout.rstrip().endswith("bye")  # end of input leaves cleanly
    ok = subprocess.run(base + ["--command", "insights --sort uses", "-c", "episodes --failed"],
                        capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert ok.returncode == 0 and "ep001" in ok.stdout and "ep002" not in ok.stdout.split("episodes")[-1]
    bad = subprocess.run(base + ["--command", "insight nope"], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=120)
    assert bad.returncode == 1 and "no insight 'nope'" in bad.stdout and "Traceback" not in bad.stderr
    missing = subprocess.run([CLI, "inspect", "--run-dir", str(tmp_path / "nowhere"), "-c", "insights"],
                             capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert missing.returncode == 2 and "not a run directory" in missing.stdout


@pytest.mark.real
def test_pty_session_on_a_real_run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The same session on the run directory the embedded model produced (MiniLM embedder); the
    directory is built once per session and shared with test_console.py."""
    run = build_real_run(tmp_path_factory.getbasetemp() / "console-real-run")
    listed, text = _interactive_session(run, None, tmp_path)
    assert "baseline" in listed or "train" in listed
