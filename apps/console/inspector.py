"""The console's entry points under their long-standing import path (scripts such as
`benchmarks/bench_console.py` import them from here).

The console itself: `parsing` (the command language), `commands` (`Inspector`), `views*` and
`chart` (renderers), `curve` (learning curves, PNG), `shell` (opening a run, the REPL).
"""

from __future__ import annotations

from insightloop.apps.console.commands import Inspector
from insightloop.apps.console.parsing import COMMANDS, CommandError
from insightloop.apps.console.shell import inspect_main, open_inspector

__all__ = ["COMMANDS", "CommandError", "Inspector", "inspect_main", "open_inspector"]
