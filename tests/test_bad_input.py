"""Bad input and faults, one test (or a few) per case of the bad-input issue: each ends in one line on
stderr and its exit code (2 bad input, 1 a failed run), before any model work, with nothing lost.

No model loads here: the policy is a fake (`runtime.make_lm` patched), the context window a fake
tokenizer (`runtime.context_window` patched), the memory uses the hashing embedder, and the litellm
cases talk to a real HTTP server on 127.0.0.1 that answers every request with one status.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import insightloop.apps.runtime as runtime
import pytest
from insightloop.agent.backends.context import ContextWindow, PromptLimit, config_length
from insightloop.apps.cli.failed_run import run_failure
from insightloop.apps.cli.main import app
from insightloop.apps.daemon.inbox import parse_inbox_file
from insightloop.apps.daemon.service import Daemon
from insightloop.apps.daemon.status import read_status
from insightloop.core.config import Config, ConfigError, MemoryConfig, ModelConfig, load_config
from insightloop.core.lm import CallTally, Generation, GenRequest
from insightloop.core.task import Task
from insightloop.evals.suites.jsonl import TaskFileError, read_task_lines
from insightloop.memory import db
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.store import MemoryStore
from typer.testing import CliRunner, Result

runner = CliRunner()
CLI = str(Path(sys.executable).parent / "insightloop")
HASHING = ["--set", "memory.embedder=hashing"]


# ---------------------------------------------------------------- shared fakes and helpers


class FakeLM:
    """Answers every request with `Answer: 42`; counts the calls."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        self.calls += 1
        return [[Generation(text=" so\n\nAnswer: 42\n", prompt_tokens=5, completion_tokens=3)] * r.n
                for r in reqs]


def word_window(length: int = 8192) -> ContextWindow:
    """A context window whose "tokenizer" counts words: no tokenizer files needed."""
    return ContextWindow(length, lambda: lambda text: len(text.split()))


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> list[FakeLM]:
    """The runtime builds fake policies (listed as built) and sees a word-counting 8192 context."""
    built: list[FakeLM] = []

    def make_lm(cfg: ModelConfig) -> FakeLM:
        built.append(FakeLM())
        return built[-1]

    monkeypatch.setattr(runtime, "make_lm", make_lm)
    monkeypatch.setattr(runtime, "context_window", lambda cfg: word_window())
    return built


def one_error_line(result: Result, code: int = 2, after_progress: bool = False) -> str:
    """Assert `result` is `code` with exactly one `error: ...` line on stderr (its last line, after
    progress lines, with `after_progress`); return that line."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines(keepends=True)
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors and errors == lines[-1:] and (after_progress or len(lines) == 1), result.stderr
    return errors[0]


def task_file(path: Path, *tasks: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path


def task(i: int | str, prompt: str = "What is 6 * 7?", answer: str = "42") -> dict[str, str]:
    return {"id": f"t{i}", "prompt": prompt, "answer": answer, "verifier": "numeric"}


BIG_PROMPT = "word " * 20_000  # 20,000 "tokens" for the word-counting window


@pytest.fixture
def memory_run(tmp_path: Path) -> Path:
    """A run directory with a memory of two insights at versions 1 and 2."""
    with MemoryStore.open(tmp_path / "run", HashingEmbedder(), MemoryConfig(embedder="hashing")) as store:
        store.add_insight("add the digits from right to left", status="active")
        store.add_insight("sort words by their first letter", status="active")
    return tmp_path / "run"


class _Always(http.server.BaseHTTPRequestHandler):
    status = 500

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": {"message": f"always {self.status}", "type": "test"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Callable[[int], str]]:
    """Start an HTTP server on 127.0.0.1 that answers every request with the given status; gives its /v1."""
    started: list[http.server.ThreadingHTTPServer] = []

    def start(status: int) -> str:
        handler = type("Handler", (_Always,), {"status": status})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1"

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def litellm_sets(api_base: str) -> list[str]:
    return ["--set", "policy.backend=litellm", "--set", "policy.model=openai/test-model",
            "--set", f"policy.api_base={api_base}", "--set", "policy.max_retries=0"]


# ---------------------------------------------------------------- 1. prompt size against the context


def test_prompt_limit_counts_only_long_prompts_and_names_the_task() -> None:
    counted: list[str] = []

    def counter(text: str) -> int:
        counted.append(text)
        return len(text.split())

    limit = PromptLimit(ContextWindow(8192, lambda: counter), reserve=1000)
    assert limit.tokens == 7192
    assert limit.problem(Task(id="short", family="f", prompt="What is 6 * 7?")) is None
    assert counted == []  # fewer bytes than the limit: it fits whatever the tokenizer does
    assert limit.problem(Task(id="long-but-fits", family="f", prompt="abcdefghij " * 1000)) is None
    problem = limit.problem(Task(id="big", family="f", prompt=BIG_PROMPT))
    assert problem is not None
    assert problem.startswith("prompt of task 'big' has 20000 tokens; the model's context is 8192")
    assert PromptLimit(None, reserve=1000).problem(Task(id="x", family="f", prompt=BIG_PROMPT)) is None


def test_a_huge_prompt_is_counted_on_a_prefix() -> None:
    seen: list[int] = []
    window = ContextWindow(8192, lambda: lambda text: seen.append(len(text)) or len(text.split()))
    n, exact = window.count("word " * 2_000_000)  # 10 MB
    assert not exact and n == pytest.approx(2_000_000, rel=0.01) and max(seen) <= 400_000


def test_context_length_is_read_from_the_model_config(tmp_path: Path) -> None:
    from insightloop.agent.backends.context import context_window

    assert config_length({"max_position_embeddings": 8192}) == 8192
    assert config_length({"text_config": {"max_position_embeddings": 4096}}) == 4096
    assert config_length({"n_positions": 1024, "max_position_embeddings": True}) == 1024
    assert config_length({"hidden_size": 64}) is None
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    window = context_window(ModelConfig(model=str(tmp_path)))
    assert window is not None and window.length == 2048
    assert context_window(ModelConfig(backend="litellm", model="openai/x")) is None  # the server's business


@pytest.mark.parametrize("command", [
    ["solve", "--suite", "jsonl:{file}", "--limit", "1", "--budget", "1", "--strategy", "sample"],
    ["solve", "--prompt", BIG_PROMPT],
    ["adapt", "--suite", "jsonl:{file}", "--train", "1", "--test", "1", "--budget", "1"],
    ["eval", "--suite", "jsonl:{file}", "--methods", "none", "--train", "1", "--test", "1", "--seeds", "1",
     "--out", "{out}"],
    ["suites", "--show", "jsonl:{file}"],
], ids=["solve", "solve-prompt", "adapt", "eval", "suites-show"])
def test_every_entry_point_refuses_a_prompt_longer_than_the_context(
        fake_model: list[FakeLM], tmp_path: Path, command: list[str]) -> None:
    file = task_file(tmp_path / "big.jsonl", task("big", prompt=BIG_PROMPT), task(2))
    args = [a.format(file=file, out=tmp_path / "out") for a in command]
    line = one_error_line(runner.invoke(app, args), after_progress=command[0] == "adapt")
    assert re.search(r"prompt of task '(tbig|adhoc)' has 200\d\d tokens; the model's context is 8192", line)
    assert fake_model == []  # refused before any model was built


def test_suites_show_skip_bad_lists_a_prompt_too_long_and_shows_the_rest(fake_model: list[FakeLM],
                                                                          tmp_path: Path) -> None:
    file = task_file(tmp_path / "big.jsonl", task("big", prompt=BIG_PROMPT), task(2))
    result = runner.invoke(app, ["suites", "--show", f"jsonl:{file}", "--skip-bad"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert re.search(r"skipped prompt of task 'tbig' has 200\d\d tokens", result.output)
    assert "1 tasks" in result.output and "first: t2" in result.output


def test_the_daemon_inbox_refuses_a_prompt_longer_than_the_context(tmp_path: Path) -> None:
    file = task_file(tmp_path / "a.jsonl", task(1), task("big", prompt=BIG_PROMPT))
    limit = PromptLimit(word_window(), reserve=1000)
    parsed = parse_inbox_file(file, max_prompt_chars=10**9, max_file_bytes=10**9, prompt_problem=limit.problem)
    assert [t.id for t in parsed.tasks] == ["t1"] and [r.line for r in parsed.rejected] == [2]
    assert "the model's context is 8192" in parsed.rejected[0].problem.message  # type: ignore[union-attr]


@pytest.mark.real
def test_solve_refuses_a_10_mb_prompt_with_the_real_tokenizer_before_loading_the_model(tmp_path: Path) -> None:
    """The embedded model's own context (8192) and tokenizer, through the real CLI."""
    task_file(tmp_path / "big.jsonl", task("big", prompt="word " * 2_000_000))
    out = subprocess.run([CLI, "solve", "--suite", "jsonl:big.jsonl", "--limit", "1", "--budget", "1",
                          "--strategy", "sample"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: prompt of task 'tbig' has about ") and out.stderr.count("\n") == 1
    assert "tokens; the model's context is 8192" in out.stderr and "Loading weights" not in out.stderr


# ---------------------------------------------------------------- 2. scientific notation (verifier fixed)


def test_task_files_refuse_a_non_finite_numeric_reference(tmp_path: Path) -> None:
    for answer in ("1e309", "nan", "-inf"):
        with pytest.raises(TaskFileError, match="not a finite number|out of range"):
            read_task_lines(task_file(tmp_path / "t.jsonl", task(1, answer=answer)))
    tasks, _ = read_task_lines(task_file(tmp_path / "t.jsonl", task(1, answer="1e3")))
    assert tasks[0].answer == "1e3"


# ---------------------------------------------------------------- 3. a damaged memory.sqlite


def _damage(run: Path, how: str) -> Path:
    db_path = run / "memory.sqlite"
    if how == "random-bytes":
        run.mkdir(parents=True, exist_ok=True)
        db_path.write_bytes(bytes(range(256)) * 80)
    else:  # truncated to half of a real memory
        with MemoryStore.open(run, HashingEmbedder(), MemoryConfig(embedder="hashing")) as store:
            for i in range(300):
                store.add_insight(f"insight number {i} about carrying digits " * 4, status="active")
        data = db_path.read_bytes()
        db_path.write_bytes(data[: len(data) // 2])
    return db_path


@pytest.mark.parametrize("how", ["random-bytes", "truncated"])
def test_insights_commands_name_a_damaged_memory_in_one_line(tmp_path: Path, how: str) -> None:
    db_path = _damage(tmp_path / "run", how)
    export = tmp_path / "export.jsonl"
    export.write_text("")
    for command in (["insights", "list"], ["insights", "import", str(export)]):
        line = one_error_line(runner.invoke(app, [*command, "--run-dir", str(tmp_path / "run"), *HASHING]))
        assert str(db_path) in line and "move the file aside" in line


@pytest.mark.parametrize("how", ["random-bytes", "truncated"])
def test_the_daemon_refuses_a_damaged_memory_and_says_so_in_status_json(tmp_path: Path, how: str) -> None:
    run = tmp_path / "run"
    db_path = _damage(run, how)
    out = subprocess.run([CLI, "daemon", "--run-dir", str(run), "--exit-when-idle"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and str(db_path) in out.stderr
    st = read_status(run)
    assert st is not None and st.state.startswith("stopped: could not start: ") and "memory.sqlite" in st.state
    assert st.last_error is not None and "move the file aside" in st.last_error


# ---------------------------------------------------------------- 4. the console writes only where told


def test_inspect_curve_png_into_a_missing_directory_creates_nothing(memory_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "deeper" / "x.png"
    result = runner.invoke(app, ["inspect", "--run-dir", str(memory_run), *HASHING, "--command",
                                 f"curve --png {target}"], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "directory does not exist" in result.output  # the command failed
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- 5. ad-hoc answers


@pytest.mark.parametrize(("verifier", "answer", "why"), [
    ("numeric", "nan", "not a finite number"),
    ("numeric", "1e309", "not a finite number"),
    ("game24", "__import__('os').system('id')", "does not suit verifier 'game24'"),
    ("game24", "(1 + 1) * 4", "not 24"),
    ("boolean", "perhaps", "does not suit verifier 'boolean'"),
    ("numeric", "  ", "--answer is empty"),
])
def test_an_adhoc_answer_is_checked_like_a_task_file_line(fake_model: list[FakeLM], verifier: str, answer: str,
                                                          why: str) -> None:
    result = runner.invoke(app, ["solve", "--prompt", "What is 6*7?", "--verifier", verifier, "--answer", answer])
    assert why in one_error_line(result)
    assert fake_model == []  # before any model work


def test_a_blank_adhoc_prompt_is_refused(fake_model: list[FakeLM]) -> None:
    assert "--prompt is empty" in one_error_line(runner.invoke(app, ["solve", "--prompt", "  \n"]))


# ---------------------------------------------------------------- 6. every backend call failed


def test_a_run_whose_every_backend_call_failed_is_a_failed_run(server: Callable[[int], str]) -> None:
    base = ["solve", "--prompt", "What is 6*7?", "--verifier", "numeric", "--answer", "42", "--strategy",
            "sample", "--budget", "2", *litellm_sets(server(500))]
    as_json = runner.invoke(app, [*base, "--json"])
    assert as_json.exit_code == 1 and "Traceback" not in as_json.output
    line = as_json.stderr.splitlines()[-1]  # after the backend's warning of each failed request, if shown
    assert line.startswith("error: the run failed: every backend call failed") and "HTTP 500" in line
    report = json.loads(as_json.stdout)
    assert report["error"] == line.removeprefix("error: ") and report["tasks"] == 1
    table = runner.invoke(app, base, env={"COLUMNS": "400"})
    assert table.exit_code == 1 and "run failed" in table.stdout and "every backend call failed" in table.stdout


def test_an_adapt_run_whose_every_backend_call_failed_is_a_failed_run(server: Callable[[int], str],
                                                                      tmp_path: Path) -> None:
    file = task_file(tmp_path / "two.jsonl", task(1), task(2, prompt="What is 3 + 3?", answer="6"))
    result = runner.invoke(app, ["adapt", "--suite", f"jsonl:{file}", "--train", "1", "--test", "1", "--budget",
                                 "2", "--json", *HASHING, *litellm_sets(server(500))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith("error: the run failed: every backend call failed")
    assert "every backend call failed" in json.loads(result.stdout)["error"]


def test_a_run_with_some_successful_calls_is_not_failed() -> None:
    class Tallied(FakeLM):
        def __init__(self) -> None:
            super().__init__()
            self.tally = CallTally()

    lm, cfg = Tallied(), ModelConfig(backend="litellm", model="openai/x", api_base="http://127.0.0.1:9/v1")
    assert run_failure(lm, cfg) is None  # no call made
    lm.tally.record("HTTP 500: down")
    failure = run_failure(lm, cfg)
    assert failure is not None and "1 of 1" in failure and "http://127.0.0.1:9/v1" in failure
    lm.tally.record()
    assert run_failure(lm, cfg) is None and run_failure(FakeLM(), cfg) is None  # an untallied backend


def test_solve_json_has_no_error_on_a_good_run(fake_model: list[FakeLM]) -> None:
    result = runner.invoke(app, ["solve", "--prompt", "What is 6*7?", "--verifier", "numeric", "--answer", "42",
                                 "--strategy", "sample", "--budget", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["error"] is None


# ---------------------------------------------------------------- 7. --set values that are not YAML


@pytest.mark.parametrize("item", ["search.rollouts=[1", "x={a: 1", "search.rollouts=!!python/object:os.system",
                                  "search.width=" + "[" * 3000])
def test_a_set_value_that_is_not_yaml_is_a_config_error_naming_the_key(item: str, tmp_path: Path) -> None:
    key = item.split("=", 1)[0]
    with pytest.raises(ConfigError, match=f"--set {key}: the value .* is not valid YAML"):
        load_config(None, [item])
    for command in (["solve", "--prompt", "1+1?"], ["daemon", "--run-dir", str(tmp_path / "never-made")]):
        assert f"--set {key}" in one_error_line(runner.invoke(app, [*command, "--set", item]))
    assert not (tmp_path / "never-made").exists()


# ---------------------------------------------------------------- 8. a --config that cannot be read


@pytest.mark.parametrize(("make", "why"), [
    (lambda p: p.write_bytes(b"\xff\xfe search: {}"), "is not UTF-8 text (byte 0xff at offset 0)"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text("search: [1"), "is not valid YAML"),
    (lambda p: None, "config file not found"),
], ids=["not-utf8", "directory", "not-yaml", "missing"])
def test_a_config_file_that_cannot_be_read_is_one_line(tmp_path: Path, make: Callable[[Path], Any],
                                                       why: str) -> None:
    path = tmp_path / "config.yaml"
    make(path)
    assert why in one_error_line(runner.invoke(app, ["solve", "--prompt", "1+1?", "--config", str(path)]))


# ---------------------------------------------------------------- 9. credentials


def test_a_refused_key_is_one_line_and_exit_2(server: Callable[[int], str]) -> None:
    result = runner.invoke(app, ["solve", "--prompt", "What is 6*7?", "--strategy", "sample", "--budget", "1",
                                 *litellm_sets(server(401))])
    assert "refused the request" in one_error_line(result) and "AuthenticationError" in result.stderr


def test_an_unset_api_key_variable_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSIGHTLOOP_SURELY_UNSET_KEY", raising=False)
    result = runner.invoke(app, ["solve", "--prompt", "What is 6*7?", *litellm_sets("http://127.0.0.1:9/v1"),
                                 "--set", "policy.api_key_env=INSIGHTLOOP_SURELY_UNSET_KEY"])
    assert "export INSIGHTLOOP_SURELY_UNSET_KEY=<key>" in one_error_line(result)


# ---------------------------------------------------------------- 10. a read-only run directory


def test_rollback_in_a_read_only_run_directory_is_one_line(memory_run: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a read-only mount, where `os.access` says so even to root (which the test runs as)."""
    real_access = os.access

    def access(path: Any, mode: int) -> bool:
        return real_access(path, mode) and not (mode == os.W_OK and Path(path).is_relative_to(memory_run))

    before = (memory_run / "memory.sqlite").read_bytes()
    monkeypatch.setattr(db.os, "access", access)
    line = one_error_line(runner.invoke(app, ["insights", "rollback", "1", "--run-dir", str(memory_run),
                                              *HASHING]))
    assert "memory.sqlite cannot be written there (the file is read-only)" in line
    assert (memory_run / "memory.sqlite").read_bytes() == before
    listed = runner.invoke(app, ["insights", "list", "--run-dir", str(memory_run), *HASHING, "--json"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)["insights"]) == 2  # reading still works


def test_a_memory_sqlite_cannot_open_where_it_lies_is_one_line(memory_run: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE_CANTOPEN, as a reader gets on a read-only mount where it cannot make memory.sqlite-shm."""
    real = db._sqlite
    monkeypatch.setattr(db, "_sqlite", lambda target, uri: real("file:/nonexistent-dir/m.sqlite?mode=ro", True))
    line = one_error_line(runner.invoke(app, ["insights", "list", "--run-dir", str(memory_run), *HASHING]))
    assert "memory.sqlite cannot be read there (unable to open database file)" in line


# ---------------------------------------------------------------- 11. a mistyped run directory


@pytest.mark.parametrize("command", [["rollback", "1"], ["list"], ["diff", "0", "1"], ["export", "x.jsonl"]])
def test_a_mistyped_run_directory_is_named_not_created(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "typo-dir"
    line = one_error_line(runner.invoke(app, ["insights", *command, "--run-dir", str(typo), *HASHING]))
    assert f"no memory in {typo}" in line
    assert not typo.exists()


def test_import_may_still_restore_into_a_new_run_directory(memory_run: Path, tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    assert runner.invoke(app, ["insights", "export", str(export), "--run-dir", str(memory_run)]).exit_code == 0
    result = runner.invoke(app, ["insights", "import", str(export), "--run-dir", str(tmp_path / "new"), *HASHING])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "memory.sqlite").is_file()


# ---------------------------------------------------------------- 12. suites --show on a huge prompt


def test_suites_show_cuts_a_huge_prompt_and_says_its_length(tmp_path: Path) -> None:
    """An API policy has no known context, so the 10 MB prompt loads; it is shown cut, quickly."""
    file = task_file(tmp_path / "big.jsonl", task("big", prompt="word " * 2_000_000))
    result = runner.invoke(app, ["suites", "--show", f"jsonl:{file}", "--set", "policy.backend=litellm"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"prompt 10,000,\d{3} characters\)", result.output)
    assert re.search(r"prompt cut: 2,000 of 10,000,\d{3} characters shown", result.output)
    assert len(result.output) < 5000


# ---------------------------------------------------------------- 13. status counts only real tasks


class _NoLearner:
    def run_episode(self, task: Task, train: bool, budget: Any) -> Any:
        raise AssertionError("no episode runs in this test")

    def respond(self, task: Task, budget: Any, learn: bool = True) -> Any:
        raise AssertionError("no episode runs in this test")


def test_status_counts_only_valid_waiting_tasks_and_lists_junk(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    task_file(inbox / "tasks.jsonl", task(1), task(2), task(3))
    (inbox / "junk.jsonl").write_bytes(b"\x89PNG\x1a\xff\xfe\x00 binary\n" * 40)
    (inbox / "photo.bin").write_bytes(bytes(range(256)) * 4)
    cfg = Config()
    cfg.daemon = cfg.daemon.model_copy(update={"inbox_settle_s": 0.0})
    d = Daemon(tmp_path, cfg, _NoLearner(), memory_version=lambda: 0, checkpoint=lambda: None)
    d.reporter.refresh()
    d.reporter.write()
    d.close()
    st = read_status(tmp_path)
    assert st is not None and st.counters.pending == 3 and st.counters.junk == 41  # 40 lines + 1 file
    table = runner.invoke(app, ["status", "--run-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "3 pending" in table.output and "inbox junk" in table.output
    assert "41 waiting that are not valid tasks" in table.output


# ---------------------------------------------------------------- 15. --set coercions


@pytest.mark.parametrize(("item", "why"), [
    ("search.rollouts=true", "search.rollouts: expected a number, got the boolean true"),
    ("search.temperature=false", "search.temperature: expected a number, got the boolean false"),
    ("policy.threads=yes", "policy.threads: expected a number, got the boolean true"),
    ("search.temperature=.inf", "search.temperature = inf: Input should be a finite number"),
    ("search.c_uct=1e400", "search.c_uct = '1e400': Input should be a finite number"),
    ("memory.min_score=.nan", "memory.min_score = nan: Input should be a finite number"),
    ("daemon.usd_per_day=-.inf", "daemon.usd_per_day = -inf: Input should be a finite number"),
])
def test_set_refuses_booleans_for_numbers_and_non_finite_values(item: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    assert why in str(info.value)


def test_set_still_takes_ordinary_values() -> None:
    cfg = load_config(None, ["search.rollouts=16", "search.temperature=1e-3", "search.c_uct=2",
                             "memory.min_score=null", "loop.synthesize=false", "policy.prefix_reuse=true"])
    assert (cfg.search.rollouts, cfg.search.temperature, cfg.search.c_uct) == (16, 0.001, 2.0)
    assert cfg.memory.min_score is None and cfg.loop.synthesize is False and cfg.policy.prefix_reuse is True
