"""Entry point of the ``agentwatch`` command: user mistakes never end in a traceback."""

from __future__ import annotations

import sys

from agentwatch.schemas import AgentwatchError

__all__ = ["main"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    from agentwatch.cli._app import app  # noqa: PLC0415

    try:
        # standalone mode: click prints usage errors itself (exit 2) and handles ^C
        app(args=argv, prog_name="agentwatch")
    except AgentwatchError as exc:
        print(f"agentwatch: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("agentwatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `agentwatch replay f | head`
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
