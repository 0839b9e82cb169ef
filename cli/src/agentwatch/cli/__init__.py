"""The ``agentwatch`` command line (``python -m agentwatch.cli``)."""

from agentwatch.cli.__main__ import main

__all__ = ["main"]
