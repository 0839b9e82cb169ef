"""The one settings loader: variable -> typed value, errors naming the source, one set of
true/false words, and the topic names every process defaults to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agentwatch.schemas import CONTROL_TOPIC as EXPORTED_CONTROL_TOPIC
from agentwatch.schemas import ConfigError
from agentwatch.schemas.settings import (
    ACKS_TOPIC,
    ALERTS_DLQ_TOPIC,
    ALERTS_TOPIC,
    CONTROL_TOPIC,
    EVENTS_DLQ_TOPIC,
    EVENTS_TOPIC,
    FALSE_WORDS,
    TRUE_WORDS,
    SettingError,
    dlq_topic_for,
    load,
    parse_bool,
)


@dataclass(frozen=True, slots=True)
class Demo:
    name: str = "n"
    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    path: Path | None = None
    ttl: int | None = 7
    topic: str = "t"

    def __post_init__(self) -> None:
        if self.count < 1:
            raise SettingError("count", f"{self.count} is not >= 1")


VARS = {"name": "X_NAME", "count": "X_COUNT", "ratio": "X_RATIO", "flag": "X_FLAG",
        "path": "X_PATH", "ttl": "X_TTL", "topic": "X_TOPIC"}


def test_strings_from_the_environment_become_the_field_types() -> None:
    env = {"X_NAME": " bob ", "X_COUNT": "3", "X_RATIO": "2", "X_FLAG": "yes",
           "X_PATH": "/srv/x", "X_TTL": "none"}
    assert load(Demo, VARS, env) == Demo(name="bob", count=3, ratio=2.0, flag=True,
                                         path=Path("/srv/x"), ttl=None)


def test_unset_and_blank_variables_leave_the_default() -> None:
    assert load(Demo, VARS, {"X_COUNT": "   ", "X_NAME": ""}) == Demo()


@pytest.mark.parametrize(("var", "raw", "message"), [
    ("X_COUNT", "abc", "X_COUNT: 'abc' is not a valid int"),
    ("X_COUNT", "2.5", "X_COUNT: '2.5' is not a valid int"),
    ("X_RATIO", "half", "X_RATIO: 'half' is not a valid float"),
    ("X_FLAG", "maybe", "X_FLAG: 'maybe' is not true or false"),
    ("X_COUNT", "0", "X_COUNT: 0 is not >= 1"),  # the class's own check, renamed
])
def test_a_bad_value_names_its_variable(var: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(Demo, VARS, {var: raw})
    assert str(caught.value) == message


def test_an_override_wins_and_is_named_as_an_option() -> None:
    assert load(Demo, VARS, {"X_COUNT": "3"}, {"count": "4", "name": None}).count == 4
    with pytest.raises(ConfigError, match=r"^--count: 'four' is not a valid int$"):
        load(Demo, VARS, {"X_COUNT": "3"}, {"count": "four"})
    with pytest.raises(ConfigError, match=r"^count: 0 is not >= 1$"):
        load(Demo, VARS, {}, {"count": 0}, given_as=str)


def test_arguments_given_in_code_must_already_have_the_type() -> None:
    with pytest.raises(ConfigError, match=r"^count: '4' is not a valid int$"):
        load(Demo, VARS, {}, {"count": "4"}, given_as=str, parse_given=False)
    with pytest.raises(ConfigError, match=r"^count: True is not a valid int$"):
        load(Demo, VARS, {}, {"count": True}, given_as=str, parse_given=False)
    with pytest.raises(ConfigError, match=r"^flag: 'yes' is not a valid bool$"):
        load(Demo, VARS, {}, {"flag": "yes"}, given_as=str, parse_given=False)
    # an int is a float, a path-like is a path or a string
    got = load(Demo, VARS, {}, {"ratio": 2, "path": Path("/p"), "name": Path("/q")},
               parse_given=False)
    assert (got.ratio, got.path, got.name) == (2.0, Path("/p"), "/q")


def test_a_fallback_variable_is_read_only_when_the_first_is_unset() -> None:
    fallbacks = {"name": ("Y_NAME", "Z_NAME")}
    assert load(Demo, VARS, {"Z_NAME": "z"}, fallbacks=fallbacks).name == "z"
    assert load(Demo, VARS, {"X_NAME": " ", "Y_NAME": "y", "Z_NAME": "z"},
                fallbacks=fallbacks).name == "y"
    assert load(Demo, VARS, {"X_NAME": "x", "Y_NAME": "y"}, fallbacks=fallbacks).name == "x"
    with pytest.raises(ConfigError, match=r"^Y_COUNT: 'x' is not a valid int$"):
        load(Demo, VARS, {"Y_COUNT": "x"}, fallbacks={"count": ("Y_COUNT",)})


def test_a_blank_variable_can_mean_off() -> None:
    assert load(Demo, VARS, {"X_TOPIC": " "}, blank_disables=("topic",)).topic == ""
    assert load(Demo, VARS, {}, blank_disables=("topic",)).topic == "t"  # unset: default
    assert load(Demo, VARS, {"X_TOPIC": ""}, {"topic": "o"}, blank_disables=("topic",)
                ).topic == "o"


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_COUNT", "9")
    assert load(Demo, VARS).count == 9


@pytest.mark.parametrize("word", sorted(TRUE_WORDS | FALSE_WORDS))
def test_every_true_and_false_word_in_any_case(word: str) -> None:
    assert parse_bool(word.upper()) is (word in TRUE_WORDS)
    assert parse_bool(f" {word} ") is (word in TRUE_WORDS)


@pytest.mark.parametrize("word", ["", "maybe", "2", "t", "y"])
def test_other_words_are_not_booleans(word: str) -> None:
    with pytest.raises(ValueError, match="is not true or false"):
        parse_bool(word)


def test_the_topic_names() -> None:
    assert (EVENTS_TOPIC, ALERTS_TOPIC, ALERTS_DLQ_TOPIC, CONTROL_TOPIC, ACKS_TOPIC) == (
        "agentwatch.events", "agentwatch.alerts", "agentwatch.alerts.dlq",
        "agentwatch.control", "agentwatch.acks")
    assert EVENTS_DLQ_TOPIC == dlq_topic_for(EVENTS_TOPIC) == "agentwatch.events.dlq"
    assert EXPORTED_CONTROL_TOPIC == CONTROL_TOPIC


def test_setting_errors_are_config_errors_and_value_errors() -> None:
    error = SettingError("X_COUNT", "0 is not >= 1")
    assert isinstance(error, ConfigError)
    assert isinstance(error, ValueError)
    assert (error.name, error.problem, str(error)) == ("X_COUNT", "0 is not >= 1",
                                                       "X_COUNT: 0 is not >= 1")
