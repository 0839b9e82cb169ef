"""Model price table: fills ``cost_usd`` from model + tokens, never guesses.

The built-in table is ``prices.toml`` beside this module; a user file in the same
format (TOML, or JSON with the same shape) extends or overrides it entry by entry.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentwatch.schemas._event import Event
from agentwatch.schemas.errors import PriceTableError

__all__ = ["PRICES_FILE_ENV", "ModelPrice", "PriceTable", "default_price_table"]

PRICES_FILE_ENV: Final = "AGENTWATCH_PRICES_FILE"
_PER_MTOK: Final = 1_000_000.0

Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: Price
    output_per_mtok: Price
    cached_input_per_mtok: Price | None = None


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: str | None = None
    models: dict[str, ModelPrice] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Rates:
    input: float
    cached_input: float
    output: float


class PriceTable:
    """Look up a model's price and compute an event's cost in USD."""

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._rates: dict[str, _Rates] = {
            name.lower(): _Rates(
                p.input_per_mtok / _PER_MTOK,
                (
                    p.cached_input_per_mtok
                    if p.cached_input_per_mtok is not None
                    else p.input_per_mtok
                )
                / _PER_MTOK,
                p.output_per_mtok / _PER_MTOK,
            )
            for name, p in prices.items()
        }
        # longest names first, so "gpt-4o-mini-2024..." matches gpt-4o-mini before gpt-4o
        self._prefixes = sorted(self._rates, key=len, reverse=True)
        self._resolved: dict[str, _Rates | None] = {}

    @classmethod
    def builtin(cls) -> PriceTable:
        return cls(
            _parse(
                resources.files(__package__).joinpath("prices.toml").read_bytes(),
                "built-in prices.toml",
                toml=True,
            )
        )

    @classmethod
    def load(cls, path: str | Path, *, base: PriceTable | None = None) -> PriceTable:
        """The built-in table (or ``base``) overridden entry by entry by the file at ``path``."""
        file = Path(path)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise PriceTableError(f"cannot read price file {file}: {exc.strerror}") from None
        override = _parse(data, str(file), toml=file.suffix.lower() != ".json")
        merged = dict((base or cls.builtin()).to_prices())
        merged.update({k.lower(): v for k, v in override.items()})
        return cls(merged)

    def to_prices(self) -> dict[str, ModelPrice]:
        return {
            name: ModelPrice(
                input_per_mtok=r.input * _PER_MTOK,
                output_per_mtok=r.output * _PER_MTOK,
                cached_input_per_mtok=r.cached_input * _PER_MTOK,
            )
            for name, r in self._rates.items()
        }

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._lookup(model) is not None

    def _lookup(self, model: str) -> _Rates | None:
        try:
            return self._resolved[model]
        except KeyError:
            pass
        name = model.strip().lower().rsplit("/", 1)[-1]
        rates = self._rates.get(name)
        if rates is None:
            for prefix in self._prefixes:
                if name.startswith(prefix) and name[len(prefix)] == "-":
                    rates = self._rates[prefix]
                    break
        if len(self._resolved) < 10_000:  # bounded memo: model names are few, but be safe
            self._resolved[model] = rates
        return rates

    def cost_usd(
        self,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_input_tokens: int | None = None,
    ) -> float | None:
        """Cost in USD, or None when the model is unknown or there are no token counts."""
        if model is None or (input_tokens is None and output_tokens is None):
            return None
        rates = self._lookup(model)
        if rates is None:
            return None
        inp = input_tokens or 0
        cached = min(cached_input_tokens or 0, inp)
        return (
            (inp - cached) * rates.input
            + cached * rates.cached_input
            + (output_tokens or 0) * rates.output
        )

    def fill_cost(self, event: Event) -> bool:
        """Set ``event.cost_usd`` from the table when it is absent. Returns False when the
        event stays unpriced (it has tokens but the model is unknown), True otherwise."""
        if event.cost_usd is not None:
            return True
        if event.input_tokens is None and event.output_tokens is None:
            return True  # nothing to price: not "unpriced"
        cost = self.cost_usd(
            event.model, event.input_tokens, event.output_tokens, event.cached_input_tokens
        )
        if cost is None:
            return False
        event.cost_usd = cost
        return True


def _parse(data: bytes, where: str, *, toml: bool) -> dict[str, ModelPrice]:
    try:
        raw: Any = tomllib.loads(data.decode()) if toml else orjson.loads(data)
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PriceTableError(f"{where}: not valid {'TOML' if toml else 'JSON'}: {exc}") from None
    try:
        return _PriceFile.model_validate(raw).models
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise PriceTableError(f"{where}: `{loc}`: {msg}") from None


_DEFAULT: PriceTable | None = None


def default_price_table() -> PriceTable:
    """The built-in table, overridden by ``$AGENTWATCH_PRICES_FILE`` when set (cached)."""
    global _DEFAULT  # noqa: PLW0603 -- one lazily built process-wide table
    if _DEFAULT is None:
        path = os.environ.get(PRICES_FILE_ENV)
        _DEFAULT = PriceTable.load(path) if path else PriceTable.builtin()
    return _DEFAULT
