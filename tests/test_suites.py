"""Task suites: bundled data from any directory, references verify, splits, the JSONL loader, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from insightloop.apps.cli.main import app
from insightloop.evals.suites import list_suites, load_suite, split
from insightloop.evals.suites.bbh import task_names
from insightloop.evals.suites.countdown import solve
from insightloop.evals.suites.jsonl import TaskFileError, parse_task_file, read_task_lines
from insightloop.evals.verifiers import verify
from typer.testing import CliRunner

BUNDLED = [name for name, size in list_suites() if size is not None]
KNOWN_SOLUTION = {"game24": "4 * 6 * 1 * 1"}  # first puzzle: 1 1 4 6


def test_list_suites_sizes() -> None:
    sizes = dict(list_suites())
    assert len(task_names()) == 20 and all(sizes[f"bbh/{t}"] == 125 for t in task_names())
    assert sizes["gsm8k"] == 7473 and sizes["game24"] == 900
    assert sizes["countdown"] == 128 and sizes["equation_balancer"] == 125
    assert sizes["rg/<dataset>"] is None and sizes["jsonl:PATH"] is None


@pytest.mark.parametrize("name", [*BUNDLED, "rg/basic_arithmetic", "rg/word_sorting"])
def test_first_task_reference_verifies(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # bundled data must not depend on the working directory
    tasks = load_suite(name, limit=3)
    assert len(tasks) == 3 and len({t.id for t in tasks}) == 3
    first = tasks[0]
    assert first.family == name and "Answer:" in first.prompt.splitlines()[-1]
    reference = KNOWN_SOLUTION.get(name, first.answer)
    assert reference is not None
    assert verify(first, f"Some reasoning.\nAnswer: {reference}").correct
    assert not verify(first, "Answer: qqq zzz").correct


@pytest.mark.parametrize("name", [n for n in BUNDLED if n != "gsm8k"])
def test_every_bundled_reference_verifies(name: str) -> None:
    tasks = load_suite(name)
    labeled = [t for t in tasks if t.answer is not None]
    assert name == "game24" or len(labeled) == len(tasks)
    wrong = [t.id for t in labeled if not verify(t, f"Answer: {t.answer}").correct]
    assert wrong == []


def test_gsm8k_answers() -> None:
    tasks = load_suite("gsm8k", limit=200)
    assert tasks[0].answer == "72" and tasks[0].verifier == "math"
    assert all(verify(t, f"Answer: {t.answer}").correct for t in tasks)


def test_bbh_verifier_kinds_and_fewshot() -> None:
    kinds = {n: load_suite(f"bbh/{n}", limit=1)[0].verifier for n in
             ("hyperbaton", "navigate", "formal_fallacies", "object_counting", "dyck_languages")}
    assert kinds == {"hyperbaton": "choice", "navigate": "boolean", "formal_fallacies": "boolean",
                     "object_counting": "numeric", "dyck_languages": "exact"}
    plain = load_suite("bbh/boolean_expressions", limit=1)[0].prompt
    shots = load_suite("bbh/boolean_expressions", limit=1, fewshot=True)[0].prompt
    assert "Q:" not in plain and shots.count("Q:") == 4 and "canary" not in shots
    assert plain.endswith('"Answer: True" or "Answer: False".')
    odd = [t for t in load_suite("bbh/ruin_names") if not t.answer.startswith("(")]  # type: ignore[union-attr]
    assert odd and all(t.verifier == "exact" for t in odd)


def test_countdown_solver_and_rg_seeding() -> None:
    assert solve([3, 3, 8, 8], 24) is not None and solve([1, 1, 1], 100) is None
    a = load_suite("rg/basic_arithmetic", limit=5, seed=1)
    b = load_suite("rg/basic_arithmetic", limit=5, seed=1)
    c = load_suite("rg/basic_arithmetic", limit=5, seed=2)
    assert [t.prompt for t in a] == [t.prompt for t in b] != [t.prompt for t in c]
    assert a[0].meta["rg_entry"]["question"] in a[0].prompt


def test_unknown_suites() -> None:
    for name, match in [("nope", "unknown suite"), ("bbh/nope", "unknown BBH task"),
                        ("rg/nope", "unknown reasoning-gym dataset")]:
        with pytest.raises(ValueError, match=match):
            load_suite(name)


def test_split_is_deterministic_and_disjoint() -> None:
    tasks = load_suite("bbh/navigate")
    train, test = split(tasks, 5, 40, seed=7)
    assert len(train) == 5 and len(test) == 40
    assert not {t.id for t in train} & {t.id for t in test}
    assert split(tasks, 5, 40, seed=7) == (train, test)
    assert split(tasks, 5, 40, seed=8) != (train, test)
    with pytest.raises(ValueError, match="cannot split"):
        split(tasks, 100, 26, seed=0)


# ---------------------------------------------------------------- JSONL


GOOD = [
    {"id": "a", "prompt": "What is 2+2?", "answer": "4", "verifier": "numeric"},
    {"id": "b", "prompt": "Pick one:\n(A) cat\n(B) dog", "answer": "(B)", "verifier": "choice",
     "family": "pets"},
    {"id": "c", "prompt": "Make 24 from 2 2 3 3.", "answer": "(2 + 2) * (3 + 3)", "verifier": "game24"},
    {"id": "d", "prompt": "Is water wet? Answer: yes or no.", "answer": "yes", "verifier": "boolean"},
]


def write(tmp_path: Path, lines: list[object], name: str = "tasks.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else json.dumps(x).encode() for x in lines) + b"\n")
    return path


def test_jsonl_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, [GOOD[0], b"", *GOOD[1:]])
    tasks, problems = read_task_lines(path)
    assert problems == [] and [t.id for t in tasks] == ["a", "b", "c", "d"]
    assert tasks[0].family == "jsonl:tasks" and tasks[1].family == "pets"
    assert "Answer:" in tasks[0].prompt and tasks[3].prompt == GOOD[3]["prompt"]
    assert tasks[1].meta["options"] == {"A": "cat", "B": "dog"}
    assert verify(tasks[1], "Answer: dog").correct and verify(tasks[2], "Answer: 2 * 2 * (3 + 3)").correct
    assert load_suite(f"jsonl:{path}", limit=2) == tasks[:2]


BAD_LINES: list[tuple[object, str]] = [
    (b'{"id": "x", "prompt": ', "bad JSON"),
    (b'["id", "x"]', "expected a JSON object"),
    ({"id": "x", "prompt": "p", "verifier": "exact"}, "missing key(s) 'answer'"),
    ({**GOOD[0], "id": "x", "extra": 1}, "unknown key(s) 'extra'"),
    ({**GOOD[0], "id": "x", "verifier": "regex"}, "unknown verifier 'regex'; allowed: exact, numeric, math"),
    ({**GOOD[0], "id": "x", "answer": 4}, "'answer' must be a non-empty string"),
    ({**GOOD[0], "id": ""}, "'id' must be a non-empty string"),
    (b'{"id": "x", "prompt": "caf\xe9", "answer": "1", "verifier": "exact"}', "invalid UTF-8"),
    ({**GOOD[0]}, "duplicate id 'a' (first on line 1)"),
    ({**GOOD[0], "id": "x", "answer": "four"}, "does not suit verifier 'numeric'"),
    ({**GOOD[2], "id": "x", "answer": "2 + 2 + 3 + 3"}, "not 24"),
    ({**GOOD[2], "id": "x", "answer": "__import__('os')"}, "does not suit verifier 'game24'"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_jsonl_bad_line_names_file_line_and_fault(tmp_path: Path, line: object, message: str) -> None:
    path = write(tmp_path, [GOOD[0], line, GOOD[1]])
    with pytest.raises(TaskFileError) as info:
        read_task_lines(path)
    assert str(info.value).startswith(f"{path}:2: ") and message in str(info.value)
    assert info.value.problem.line == 2


def test_jsonl_skip_bad_reports_every_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path, [GOOD[0], *[line for line, _ in BAD_LINES], GOOD[1]])
    tasks, problems = read_task_lines(path, skip_bad=True)
    assert [t.id for t in tasks] == ["a", "b"]
    assert [p.line for p in problems] == list(range(2, 2 + len(BAD_LINES)))
    assert all(message in p.message for p, (_, message) in zip(problems, BAD_LINES, strict=True))
    assert [t.id for t in load_suite(f"jsonl:{path}", skip_bad=True)] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="task file not found"):
        read_task_lines(tmp_path / "missing.jsonl")



def test_jsonl_parser_gives_each_line_its_number_bytes_and_task_or_problem(tmp_path: Path) -> None:
    bad = b'{"id": "x", "prompt": "caf\xe9", "answer": "1", "verifier": "exact"}'
    path = write(tmp_path, [GOOD[0], b"", bad, {**GOOD[0]}, GOOD[1]])
    lines = parse_task_file(path)
    assert [e.line for e in lines] == [1, 3, 4, 5]
    assert [e.task.id if e.task else None for e in lines] == ["a", None, None, "b"]
    assert lines[1].raw == bad and lines[1].problem is not None and lines[1].problem.line == 3
    assert "duplicate id 'a'" in lines[2].problem.message  # type: ignore[union-attr]
    assert lines[0].raw == json.dumps(GOOD[0]).encode() and lines[0].problem is None

# ---------------------------------------------------------------- CLI


def test_cli_suites_table_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["suites"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(s in result.output for s in ("bbh/boolean_expressions", "7473", "rg/<dataset>"))
    result = runner.invoke(app, ["suites", "--rg"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "rg/basic_arithmetic" in result.output
    path = write(tmp_path, [GOOD[0], b"{oops", GOOD[1]])
    result = runner.invoke(app, ["suites", "--show", f"jsonl:{path}"], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and f"{path}:2: bad JSON" in result.output
    result = runner.invoke(app, ["suites", "--show", f"jsonl:{path}", "--skip-bad"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "skipped" in result.output and "2 tasks" in result.output


@pytest.mark.real
def test_real_model_completions_are_scored_without_errors() -> None:
    """Completions of the embedded SmolLM2 policy go through every kind of verifier without raising."""
    from insightloop.agent.backends import make_lm
    from insightloop.core.config import load_config
    from insightloop.core.lm import GenRequest

    lm = make_lm(load_config(None, []).policy)
    tasks = [load_suite(name, limit=1)[0] for name in
             ("bbh/hyperbaton", "game24")]
    outs = lm.generate([GenRequest.chat(t.prompt, max_tokens=24, temperature=0.0, seed=0) for t in tasks])
    for t, out in zip(tasks, outs, strict=True):
        text = out[0].text
        assert text.strip()
        reward = verify(t, text)
        assert reward.score in (0.0, 1.0)
        assert reward.parsed_answer is not None or reward.error
        assert verify(t, text + "\nAnswer: qqq").score == 0.0
