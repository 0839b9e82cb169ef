"""Reading a user's configuration file (rules, webhook endpoints): YAML or TOML.

One reader, so every file agentwatch reads fails the same way: a one-line
:class:`ConfigError` naming the file (what it could not read, or which format it is
not valid as). Validating the content is the caller's job (pydantic, naming the key).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from agentwatch.schemas.errors import ConfigError

__all__ = ["read_config_file"]


def read_config_file(path: str | Path, what: str) -> Any:
    """The parsed content of a ``.yaml``/``.yml``/``.json`` (YAML reads JSON too) or
    ``.toml`` file; ``what`` names the kind of file in errors ("rules", "endpoints")."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = file.suffix.lower()
    if suffix not in {".toml", ".yaml", ".yml", ".json"}:
        raise ConfigError(f"{file}: unknown {what} file type {suffix!r}; use .yaml or .toml")
    kind = "TOML" if suffix == ".toml" else suffix[1:].upper()
    try:
        return _parse(text, toml=suffix == ".toml")
    except RecursionError:  # both parsers recurse per level of nesting
        raise ConfigError(f"{file}: not valid {kind}: nested too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, and YAMLError (re-raised as one below)
        raise ConfigError(f"{file}: not valid {kind}: {exc}") from None


def _parse(text: str, *, toml: bool) -> Any:
    if toml:
        return tomllib.loads(text)
    import yaml  # noqa: PLC0415 -- only YAML files need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
