"""PriceTable: lookup rules, cached-token pricing, fill_cost, override files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agentwatch.schemas import Event, ModelPrice, PriceTable, PriceTableError

MTOK = 1_000_000


@pytest.fixture(scope="module")
def builtin() -> PriceTable:
    return PriceTable.builtin()


# -- lookup -----------------------------------------------------------------------------------
def test_exact_model_name_is_priced(builtin: PriceTable) -> None:
    # gpt-4o: 2.50 in, 10.00 out per million tokens
    assert builtin.cost_usd("gpt-4o", MTOK, MTOK) == pytest.approx(12.5)


def test_lookup_ignores_case(builtin: PriceTable) -> None:
    assert builtin.cost_usd("GPT-4o", MTOK, 0) == pytest.approx(2.5)


def test_provider_prefix_is_removed(builtin: PriceTable) -> None:
    assert builtin.cost_usd("openai/gpt-4o", MTOK, 0) == pytest.approx(2.5)


def test_dated_suffix_prices_as_base_model(builtin: PriceTable) -> None:
    assert builtin.cost_usd("gpt-4o-2024-08-06", MTOK, 0) == pytest.approx(2.5)


def test_longest_matching_name_wins(builtin: PriceTable) -> None:
    # gpt-4o-mini-...: 0.15 in (the gpt-4o-mini price, not gpt-4o's 2.50)
    assert builtin.cost_usd("gpt-4o-mini-2024-07-18", MTOK, 0) == pytest.approx(0.15)


def test_prefix_must_end_at_a_dash(builtin: PriceTable) -> None:
    assert builtin.cost_usd("gpt-4ox", MTOK, 0) is None


def test_unknown_model_is_unpriced(builtin: PriceTable) -> None:
    assert builtin.cost_usd("no-such-model", MTOK, MTOK) is None
    assert "no-such-model" not in builtin
    assert "gpt-4o" in builtin


def test_no_token_counts_is_unpriced(builtin: PriceTable) -> None:
    assert builtin.cost_usd("gpt-4o", None, None) is None


def test_no_model_is_unpriced(builtin: PriceTable) -> None:
    assert builtin.cost_usd(None, MTOK, 0) is None


def test_cached_tokens_are_priced_at_cached_rate(builtin: PriceTable) -> None:
    # gpt-4o: 2.50 input, 1.25 cached input; 1M input of which 400k from the cache
    cost = builtin.cost_usd("gpt-4o", MTOK, 0, cached_input_tokens=400_000)
    assert cost == pytest.approx(0.6 * 2.5 + 0.4 * 1.25)


def test_cached_rate_defaults_to_input_rate() -> None:
    table = PriceTable({"m": ModelPrice(input_per_mtok=2.0, output_per_mtok=0)})
    assert table.cost_usd("m", MTOK, 0, cached_input_tokens=MTOK) == pytest.approx(2.0)


def test_cached_tokens_never_exceed_input_tokens() -> None:
    table = PriceTable({"m": ModelPrice(input_per_mtok=2.0, output_per_mtok=0,
                                        cached_input_per_mtok=1.0)})
    assert table.cost_usd("m", 100, 0, cached_input_tokens=1_000) == pytest.approx(100 / MTOK)


# -- fill_cost --------------------------------------------------------------------------------
def _event(event_data: dict[str, Any], **fields: Any) -> Event:
    return Event.model_validate_json(orjson.dumps({**event_data, **fields}))


def test_fill_cost_sets_cost_from_model_and_tokens(
    builtin: PriceTable, event_data: dict[str, Any]
) -> None:
    event = _event(event_data, model="gpt-4o", input_tokens=1_000, output_tokens=100)
    assert builtin.fill_cost(event) is True
    assert event.cost_usd == pytest.approx(1_000 * 2.5 / MTOK + 100 * 10 / MTOK)


def test_fill_cost_keeps_a_given_cost(builtin: PriceTable, event_data: dict[str, Any]) -> None:
    event = _event(event_data, model="gpt-4o", input_tokens=1_000, cost_usd=7.0)
    assert builtin.fill_cost(event) is True
    assert event.cost_usd == 7.0


def test_fill_cost_reports_unknown_model(builtin: PriceTable, event_data: dict[str, Any]) -> None:
    event = _event(event_data, model="no-such-model", input_tokens=1_000)
    assert builtin.fill_cost(event) is False
    assert event.cost_usd is None


def test_fill_cost_without_tokens_is_not_unpriced(
    builtin: PriceTable, event_data: dict[str, Any]
) -> None:
    event = _event(event_data, model="no-such-model")
    assert builtin.fill_cost(event) is True
    assert event.cost_usd is None


# -- override files ---------------------------------------------------------------------------
def test_override_file_overrides_and_extends(builtin: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gpt-4o"]\ninput_per_mtok = 100.0\noutput_per_mtok = 0.0\n'
        '[models."House-Model"]\ninput_per_mtok = 3.0\noutput_per_mtok = 4.0\n',
        encoding="utf-8",
    )
    table = PriceTable.load(path)
    assert table.cost_usd("gpt-4o", MTOK, 0) == pytest.approx(100.0)
    assert table.cost_usd("house-model", MTOK, MTOK) == pytest.approx(7.0)
    # untouched entries keep the built-in price
    assert table.cost_usd("gpt-4o-mini", MTOK, MTOK) == pytest.approx(
        builtin.cost_usd("gpt-4o-mini", MTOK, MTOK))


def test_override_file_in_json(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(orjson.dumps(
        {"models": {"house-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}))
    assert PriceTable.load(path).cost_usd("house-model", MTOK, 0) == pytest.approx(1.0)


def test_override_file_with_unknown_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."m"]\ninput_per_mtok = 1.0\noutput_per_mtok = 1.0\ncached_per_mtok = 0.5\n',
        encoding="utf-8",
    )
    with pytest.raises(PriceTableError, match=r"`models\.m\.cached_per_mtok`: unknown key"):
        PriceTable.load(path)


def test_override_file_missing_a_price_names_it(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."m"]\ninput_per_mtok = 1.0\n', encoding="utf-8")
    with pytest.raises(PriceTableError, match=r"`models\.m\.output_per_mtok`: Field required"):
        PriceTable.load(path)


def test_override_file_with_bad_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."m"]\ninput_per_mtok = -1.0\noutput_per_mtok = 1.0\n',
                    encoding="utf-8")
    with pytest.raises(PriceTableError, match=r"`models\.m\.input_per_mtok`"):
        PriceTable.load(path)


def test_override_file_with_bad_toml_is_price_table_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("[models\n", encoding="utf-8")
    with pytest.raises(PriceTableError, match="not valid TOML"):
        PriceTable.load(path)


def test_missing_override_file_is_price_table_error(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="cannot read price file"):
        PriceTable.load(tmp_path / "missing.toml")
