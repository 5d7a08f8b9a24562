"""The bundled data files under `evals/data/`, package data of `insightloop.evals`."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc only exists from Python 3.11
    from importlib.resources.abc import Traversable


def data_file(*parts: str) -> Traversable:
    """A bundled data file under `evals/data/`."""
    node = files("insightloop.evals").joinpath("data")
    for part in parts:
        node = node.joinpath(part)
    return node
