"""The answer-format line that ends every prompt, matched to how each verifier extracts answers."""

from __future__ import annotations

_EXPRESSION = '"Answer: <expression>" using each given number exactly once with + - * / and parentheses'


def answer_instruction(verifier: str, labels: tuple[str, str] = ("True", "False")) -> str:
    """The answer-format line for tasks checked by `verifier`; `labels` are a boolean task's two words."""
    what = {
        "choice": '"Answer: (X)", where X is the letter of the correct option',
        "boolean": f'"Answer: {labels[0]}" or "Answer: {labels[1]}"',
        "numeric": '"Answer: <number>"',
        "math": '"Answer: <final answer>"',
        "game24": _EXPRESSION,
        "countdown": _EXPRESSION,
        "equation": '"Answer: <equation>", the full equation with each ? replaced by + - * or /',
        "rg": '"Answer:" followed by your final answer (a multi-line answer goes on the lines below it)',
    }.get(verifier, '"Answer: <answer>"')
    return f"Think step by step, then finish with a line {what}."
