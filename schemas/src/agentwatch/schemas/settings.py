"""The one settings loader of every agentwatch process, and the default topic names.

Every settings class (the producer's, the worker's, the sink's, the webhook dispatcher's,
``agentwatch control``'s and ``alerts ack``'s, the Kafka security settings) is a frozen
dataclass whose ``from_env`` / ``resolve`` calls :func:`load`: a value given in code (a constructor
argument, a CLI option) wins, else its environment variable (blank counts as unset), else
the dataclass default. Strings are converted to the field's type; a value given in code
must already have it. A bad value raises :class:`SettingError` (a
:class:`~agentwatch.schemas.ConfigError`) naming where it came from, in one format::

    AGENTWATCH_LINGER_MS: 'abc' is not a valid int
    --batch-max-ms: -5 is not >= 1
    queue_size: 0 is not between 1 and 10000000

Why not pydantic-settings (the ecosystem's kept library, already in the lock file through
the bench's quixstreams)? ``bench/bench_settings.py`` measures both in one run (median of 7
fresh interpreters each; three runs on 2 cores, load ~0.3, 2026-12-04):
``import agentwatch.producer`` took 164-176 ms, and 218-246 ms with pydantic-settings
imported and the producer's 18 settings declared on it (+52 to +75 ms, +30 to +44 %;
pydantic itself is loaded either way, by the event model). Reading the settings took
28-36 us per client here against 463-547 us (16-18x). Its error names the field, not the
variable (``1 validation error for PeerSettings / linger_ms / Input should be a valid
integer, unable to parse string as an integer [type=int_parsing, input_value='abc', ...]``
against ``AGENTWATCH_LINGER_MS: 'abc' is not a valid int``); it merges its sources, so it
cannot say whether a bad value came from ``--batch-max-ms`` or
``AGENTWATCH_SINK_BATCH_MAX_MS``; and the producer, which agents install, would pull
python-dotenv. Translating its errors back to variables would be a loader of its own on
top of it. So this module is the one loader: small, standard library only, in the
distribution every other one already depends on.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from agentwatch.schemas.errors import ConfigError

__all__ = [
    "ACKS_TOPIC",
    "ALERTS_DLQ_TOPIC",
    "ALERTS_TOPIC",
    "CONTROL_TOPIC",
    "DEFAULT_BOOTSTRAP_SERVERS",
    "EVENTS_DLQ_TOPIC",
    "EVENTS_TOPIC",
    "FALSE_WORDS",
    "TRUE_WORDS",
    "SettingError",
    "cli_option",
    "dlq_topic_for",
    "load",
    "parse_bool",
]

#: Where agents' events go (the producer's ``topic``; the worker and the sink read it).
EVENTS_TOPIC: Final = "agentwatch.events"
#: Alert state changes (worker -> webhook dispatcher, sink).
ALERTS_TOPIC: Final = "agentwatch.alerts"
#: Webhook deliveries that finally failed (dispatcher -> sink).
ALERTS_DLQ_TOPIC: Final = "agentwatch.alerts.dlq"
#: Halt and resume records (compacted; worker and operators -> producers, sink).
CONTROL_TOPIC: Final = "agentwatch.control"
#: Acknowledgements of alerts (compacted; dispatcher's links and the CLI -> sink).
ACKS_TOPIC: Final = "agentwatch.acks"
#: Brokers of the services when ``KAFKA_BOOTSTRAP_SERVERS`` is not set.
DEFAULT_BOOTSTRAP_SERVERS: Final = "localhost:9092"


def dlq_topic_for(events_topic: str) -> str:
    """The worker's dead-letter topic of an events topic: ``<events_topic>.dlq``."""
    return f"{events_topic}.dlq"


#: Invalid events, with the reason (worker -> sink's ``dead_letters``).
EVENTS_DLQ_TOPIC: Final = dlq_topic_for(EVENTS_TOPIC)

#: The words a boolean setting accepts (any case).
TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    """``true``/``false`` and their synonyms (:data:`TRUE_WORDS`, :data:`FALSE_WORDS`);
    ValueError for anything else."""
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r} is not true or false")


class SettingError(ConfigError):
    """A value one setting does not accept; ``name`` is the setting, or where its value
    came from once :func:`load` has said so (variable, option)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def cli_option(name: str) -> str:
    """How :func:`load` names a value given by a CLI option: ``--batch-max-ms``."""
    return f"--{name.replace('_', '-')}"


T = TypeVar("T")


def load(
    cls: type[T],
    env_vars: Mapping[str, str],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    fallbacks: Mapping[str, tuple[str, ...]] | None = None,
    blank_disables: Collection[str] = (),
    given_as: Callable[[str], str] = cli_option,
    parse_given: bool = True,
) -> T:
    """Build the settings dataclass ``cls``.

    ``env_vars`` maps a field to its environment variable, read from ``env``
    (``os.environ`` by default); ``fallbacks`` names more variables a field is read from
    when its own is unset (first set wins). A blank variable is unset, except for the
    fields in ``blank_disables``, whose blank variable gives ``""`` (e.g. "do not read
    this topic"). ``overrides`` that are not None win; ``given_as(field)`` names them in
    errors (default: the CLI option); with ``parse_given=False`` (constructor arguments)
    they must already have the field's type, a string is not parsed. The dataclass's
    ``__post_init__`` raises :class:`SettingError` with the field's name; it is renamed
    after the value's source.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, var in env_vars.items():
        for candidate in (var, *(fallbacks or {}).get(name, ())):
            raw = env.get(candidate)
            if raw is None:
                continue
            raw = raw.strip()
            if raw or name in blank_disables:
                values[name], source[name] = raw, candidate
                break
    given = {name for name, value in (overrides or {}).items() if value is not None}
    for name in given:
        values[name], source[name] = (overrides or {})[name], given_as(name)
    hints = _field_types(cls)
    converted = {
        name: _convert(hints[name], value, source[name], parse=parse_given or name not in given)
        for name, value in values.items()
    }
    try:
        return cls(**converted)
    except SettingError as exc:
        raise SettingError(source.get(exc.name, exc.name), exc.problem) from None


_FIELD_TYPES: dict[type[Any], dict[str, Any]] = {}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    """The dataclass's resolved field types (its annotations are strings), once per class."""
    hints = _FIELD_TYPES.get(cls)
    if hints is None:
        hints = _FIELD_TYPES[cls] = typing.get_type_hints(cls)
    return hints


def _convert(hint: Any, value: Any, source: str, *, parse: bool = True) -> Any:
    """``value`` (a string from the environment or an option, or a value given in code) as
    the field type ``hint``: str, int, float, bool or Path, optionally ``| None``."""
    kind, optional = hint, False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        kind = args[0] if len(args) == 1 else str
    if kind not in _PARSERS:
        return value  # e.g. KafkaSecurity: given in code, checked by its own class
    name = kind.__name__
    if isinstance(value, str) and (parse or kind is str):
        if optional and kind is int and value.strip().lower() == "none":
            return None
        try:
            return _PARSERS[kind](value)
        except ValueError:
            problem = "is not true or false" if kind is bool else f"is not a valid {name}"
            raise SettingError(source, f"{value!r} {problem}") from None
    if isinstance(value, os.PathLike) and kind in {str, Path}:
        return kind(os.fspath(value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingError(source, f"{value!r} is not a valid {name}")
    return value


_PARSERS: Final[dict[type[Any], Callable[[str], Any]]] = {
    str: str,
    int: int,
    float: float,
    bool: parse_bool,
    Path: Path,
}
