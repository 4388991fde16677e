"""Makes `pyodbc` and `aioodbc` unimportable, as on a machine without the ODBC libraries.

A directory holding this file, first on PYTHONPATH, applies it to a Python process and to
every process it starts (tests/unit/test_without_odbc.py, tests/e2e/test_without_odbc.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = frozenset({"pyodbc", "aioodbc"})
MESSAGE = "libodbc.so.2: cannot open shared object file: No such file or directory (blocked)"


class NoOdbc:
    """A meta path finder that fails the import as a missing libodbc would."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(MESSAGE, name=name)
        return None


sys.meta_path.insert(0, NoOdbc())
