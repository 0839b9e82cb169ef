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
    suffix = file.suffix.lower()
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    if suffix in {".yaml", ".yml", ".json"}:
        import yaml  # noqa: PLC0415 -- only YAML files need it

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid {suffix[1:].upper()}: {exc}") from None
    raise ConfigError(f"{file}: unknown {what} file type {suffix!r}; use .yaml or .toml")
