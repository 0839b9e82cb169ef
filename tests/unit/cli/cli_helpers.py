"""In-process runs of the ``agentwatch`` command for the CLI tests."""

from __future__ import annotations

import pytest

from agentwatch.cli.__main__ import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``agentwatch ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one line a user mistake prints (and nothing else)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agentwatch: error: "), err
    return lines[0]
