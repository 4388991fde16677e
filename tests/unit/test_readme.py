"""The README tells the truth: its commands are what CI runs, its table is the settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sheaf.cli import config_table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _code_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_run_and_test_commands() -> None:
    run, test = (block.strip() for block in _code_blocks()[:2])
    assert run.endswith("sheaf up")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test = _code_blocks()[1].strip()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_configuration_table_matches_the_settings() -> None:
    table = README.split("<!-- config-table:start -->\n", 1)[1].split(
        "\n<!-- config-table:end -->"
    )[0]
    assert table == config_table(), "regenerate with: sheaf config --markdown"
