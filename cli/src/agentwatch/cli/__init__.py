"""The ``agentwatch`` command line (``python -m agentwatch.cli``)."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command (what the ``agentwatch`` script calls)."""
    # Imported here: a package that imports its own __main__ makes `python -m` warn.
    from agentwatch.cli.__main__ import main as run  # noqa: PLC0415

    return run(argv)
