"""Property-based fuzzing of the command line's inputs: task lines, `--set` values and config files.

Whatever the input, a command ends with exit code 0 (it ran) or 2 (bad input, one line on stderr),
never a traceback, and writes nothing outside its run directory. The policy is a fake built by the
runtime factory and the context window counts words, so no model or tokenizer loads; `--strategy
sample --budget 1` come after any `--set` or config file and keep every run to one rollout.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import insightloop.apps.runtime as runtime
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from insightloop.agent.backends.context import ContextWindow
from insightloop.apps.cli.main import app
from insightloop.core.config import Config
from insightloop.core.lm import Generation, GenRequest
from insightloop.evals.verifiers import TASK_FILE_VERIFIERS
from typer.testing import CliRunner

runner = CliRunner()
FUZZ = settings(max_examples=40, deadline=None, database=None,  # no example files in the work tree
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SOLVE = ["--strategy", "sample", "--budget", "1", "--run-dir", "run"]


class FakeLM:
    """Answers every request with `Answer: 42`."""

    name = "fake"

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        return [[Generation(text=" so\n\nAnswer: 42\n", prompt_tokens=5, completion_tokens=3)] * r.n
                for r in reqs]


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fake policy, a word-counting context, and a home whose writes would show."""
    monkeypatch.setattr(runtime, "make_lm", lambda cfg: FakeLM())
    monkeypatch.setattr(runtime, "context_window",
                        lambda cfg: ContextWindow(8192, lambda: lambda text: len(text.split())))
    with tempfile.TemporaryDirectory(prefix="insightloop-fuzz-home-") as home:
        monkeypatch.setenv("HOME", home)
        monkeypatch.setenv("XDG_CACHE_HOME", str(Path(home) / ".cache"))
        yield
        assert not any(Path(home).iterdir()), "a command wrote into the home directory"


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def invoke(args: list[str], inputs: dict[str, bytes]) -> None:
    """Run `args` in a fresh directory holding `inputs`; check the exit code, stderr and what was written."""
    with tempfile.TemporaryDirectory(prefix="insightloop-fuzz-") as tmp:
        root = Path(tmp)
        for name, data in inputs.items():
            (root / name).write_bytes(data)
        before = _files(root)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            result = runner.invoke(app, args)
        finally:
            os.chdir(cwd)
        assert result.exit_code in (0, 2), (args, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert result.stderr.startswith(("error: ", "Usage: ")), result.stderr
            if result.stderr.startswith("error: "):
                assert result.stderr.count("\n") == 1, result.stderr
        written = {p for p in _files(root) - before if p.parts[0] != "run"}
        assert not written, f"written outside the run directory: {sorted(map(str, written))}"


# ---------------------------------------------------------------- task lines

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
ANSWERS = st.one_of(TEXT, st.sampled_from(["42", "1e309", "nan", "-inf", "(1 + 1) * (4 + 8)", "(A)", "Yes",
                                            "__import__('os')", "1/0", "9" * 60, "", " "]))
TASK_OBJECTS = st.fixed_dictionaries(
    {"id": TEXT, "prompt": TEXT, "answer": ANSWERS,
     "verifier": st.one_of(st.sampled_from(TASK_FILE_VERIFIERS), TEXT)},
    optional={"family": TEXT, "extra": TEXT})
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                           max_leaves=8)
LINES = st.one_of(TASK_OBJECTS.map(json.dumps), JSON_VALUES.map(json.dumps), TEXT,
                  st.binary(max_size=40).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(lines=st.lists(LINES, max_size=6), raw=st.binary(max_size=30), skip_bad=st.booleans())
def test_task_files_load_or_fail_in_one_line(sandbox: None, lines: list[str], raw: bytes, skip_bad: bool) -> None:
    data = "\n".join(lines).encode() + b"\n" + raw
    show = ["suites", "--show", "jsonl:tasks.jsonl"] + (["--skip-bad"] if skip_bad else [])
    invoke(show, {"tasks.jsonl": data})
    invoke(["solve", "--suite", "jsonl:tasks.jsonl", "--limit", "3", *SOLVE], {"tasks.jsonl": data})


# ---------------------------------------------------------------- --set values


def _keys(model: type[Any], prefix: str = "") -> list[str]:
    """Every dotted key of the config (sections too)."""
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        kind = field.annotation
        for candidate in getattr(kind, "__args__", (kind,)):
            if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                out += _keys(candidate, f"{prefix}{name}.")
    return out


CONFIG_KEYS = _keys(Config)
VALUES = st.one_of(TEXT, st.sampled_from(["true", "no", ".inf", "-.inf", ".nan", "1e400", "[1", "{a: 1",
                                          "!!python/object:os.system", "null", "~", "[1, 2]", "{}", "0", "-1",
                                          "1e3", "0x10", "'quoted'", "2020-01-01", "[" * 2000, "&a [*a]"]))


@FUZZ
@given(key=st.one_of(st.sampled_from(CONFIG_KEYS), TEXT), value=VALUES, bare=st.booleans())
def test_set_values_apply_or_fail_in_one_line(sandbox: None, key: str, value: str, bare: bool) -> None:
    item = key if bare else f"{key}={value}"
    invoke(["solve", "--prompt", "What is 6*7?", "--verifier", "numeric", "--answer", "42", "--set", item,
            *SOLVE], {})


# ---------------------------------------------------------------- config files

SECTIONS = st.sampled_from(["policy", "search", "memory", "loop", "fold", "daemon", "analyst", "seed", "other"])
YAML_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
CONFIG_DOCS = st.dictionaries(
    SECTIONS, st.one_of(YAML_SCALARS, st.dictionaries(st.one_of(st.sampled_from(CONFIG_KEYS).map(
        lambda k: k.rsplit(".", 1)[-1]), TEXT), YAML_SCALARS, max_size=4)), max_size=4)


@FUZZ
@given(doc=st.one_of(CONFIG_DOCS.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
                     st.binary(max_size=60), TEXT.map(str.encode)))
def test_config_files_load_or_fail_in_one_line(sandbox: None, doc: bytes) -> None:
    invoke(["solve", "--prompt", "What is 6*7?", "--verifier", "numeric", "--answer", "42", "--config",
            "config.yaml", *SOLVE], {"config.yaml": doc})
