"""Collection names: what the API, the key grants and the CLI all accept."""

from __future__ import annotations

import re

# 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.
COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
