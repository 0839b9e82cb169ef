"""Config files (rules, webhook endpoints) read from hostile bytes: the only error is a
ConfigError naming the file, never a traceback (UnicodeDecodeError, RecursionError)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_inputs import HOSTILE
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.schemas import ConfigError
from agentwatch.schemas.config_files import read_config_file

SUFFIXES = [".yaml", ".yml", ".json", ".toml"]


def _read(tmp_path: Path, suffix: str, content: bytes) -> None:
    file = tmp_path / f"config{suffix}"
    file.write_bytes(content)
    try:
        read_config_file(file, "rules")
    except ConfigError as exc:  # PyYAML's own messages span lines (they point at the spot)
        message = str(exc)
    else:
        return
    assert message.startswith(str(file))


@HOSTILE
@given(st.binary(max_size=300), st.sampled_from(SUFFIXES))
def test_arbitrary_bytes_give_a_config_error_or_content(tmp_path_factory: pytest.TempPathFactory,
                                                        content: bytes, suffix: str) -> None:
    _read(tmp_path_factory.mktemp("cfg"), suffix, content)


@HOSTILE
@given(st.text(alphabet="[]{}:,-=\"'&*!\n #ab1.", max_size=200), st.sampled_from(SUFFIXES))
def test_arbitrary_yaml_and_toml_punctuation_gives_a_config_error_or_content(
        tmp_path_factory: pytest.TempPathFactory, content: str, suffix: str) -> None:
    _read(tmp_path_factory.mktemp("cfg"), suffix, content.encode())


@pytest.mark.parametrize(("suffix", "content", "says"), [
    (".yaml", b"\xff\xfe rules: {}", "not UTF-8"),
    (".toml", b"a = '\xc3'", "not UTF-8"),
    (".yaml", b"[" * 100_000, "nested too deeply"),
    (".json", b'{"a":' * 100_000, "nested too deeply"),
    (".toml", b"a = " + b"[" * 100_000, "nested too deeply"),
    (".yaml", b"a: !!python/object/apply:os.system [echo]", "not valid YAML"),
])
def test_undecodable_and_deeply_nested_files_are_config_errors(
        tmp_path: Path, suffix: str, content: bytes, says: str) -> None:
    file = tmp_path / f"rules{suffix}"
    file.write_bytes(content)
    with pytest.raises(ConfigError, match=says):
        read_config_file(file, "rules")
