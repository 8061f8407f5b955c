"""GPU instance list prices: a typed, immutable view of the packaged ``prices.yaml``, validated on
load. The figures are public pay-as-you-go list prices recorded by hand, not fetched: they go
stale, so every use should print :meth:`PriceTable.describe_source` next to them. Lookups are
case-insensitive."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from presets.catalog import (
    CatalogError,
    _describe,
    _Entry,
    _index_unique,
    _key,
    _packaged,
    _read_yaml,
)

__all__ = ["Price", "PriceTable", "default_prices", "load_prices"]

PRICES_FILE = "prices.yaml"


@dataclass(frozen=True, slots=True)
class Price:
    """The list price of one instance type, in the table's currency per hour."""

    sku: str
    cloud: str
    usd_per_hour: float


def _index_prices(prices: Iterable[Price]) -> Mapping[str, Price]:
    return _index_unique(prices, lambda price: price.sku, "price", "sku")


@dataclass(frozen=True)
class PriceTable:
    """Every recorded price, where and when it was recorded, with case-insensitive lookups."""

    source: str
    recorded: str
    currency: str
    regions: Mapping[str, str] = field(hash=False)
    entries: tuple[Price, ...]
    _index: Mapping[str, Price] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", MappingProxyType(dict(self.regions)))
        object.__setattr__(self, "_index", _index_prices(self.entries))

    def price(self, sku: str) -> Price | None:
        """The price of the instance type ``sku``, in any case; None when none is recorded."""
        return self._index.get(_key(sku))

    def describe_source(self, cloud: str) -> str:
        """Where a price of ``cloud`` comes from, to print next to it, e.g. ``USD list price,
        East US, recorded 2026-11-21 (Public pay-as-you-go ...)``."""
        region = self.regions.get(_key(cloud))
        where = f", {region}" if region else ""
        return f"{self.currency} list price{where}, recorded {self.recorded} ({self.source})"


# --- file schema -------------------------------------------------------------------------------

_Cloud = Literal["azure", "azure-arc", "aws"]
_NonEmpty = Annotated[str, Field(min_length=1)]


class _Header(_Entry):
    source: _NonEmpty
    recorded: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    currency: Literal["USD"]
    unit: Literal["hour"]
    region: Annotated[dict[_Cloud, _NonEmpty], Field(min_length=1)]
    prices: list[Any]

    @field_validator("recorded", mode="before")
    @classmethod
    def _unquoted_date(cls, value: object) -> object:
        # YAML reads an unquoted 2026-11-21 as a date: take it as the same text.
        return value.isoformat() if type(value) is datetime.date else value

    @field_validator("recorded")
    @classmethod
    def _a_real_date(cls, value: str) -> str:
        datetime.date.fromisoformat(value)  # a ValueError names the bad date
        return value


class _PriceEntry(_Entry):
    sku: Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.\-]*$")]
    cloud: _Cloud
    usd_per_hour: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    def to_price(self) -> Price:
        return Price(**self.model_dump())


# --- loading -----------------------------------------------------------------------------------


def _parse_entries(source: Path | Traversable, header: _Header) -> tuple[Price, ...]:
    prices: list[Price] = []
    for position, raw in enumerate(header.prices, start=1):
        if not isinstance(raw, dict):
            raise CatalogError(f"{source}: price #{position}: must be a mapping")
        label = repr(raw["sku"]) if isinstance(raw.get("sku"), str) else f"#{position}"
        try:
            price = _PriceEntry.model_validate(raw).to_price()
        except ValidationError as exc:
            raise CatalogError(f"{source}: price {label}: {_describe(exc)}") from None
        if price.cloud not in header.region:
            raise CatalogError(
                f"{source}: price {label}: field 'cloud': no region is recorded for "
                f"{price.cloud!r} under 'region'"
            )
        prices.append(price)
    return tuple(prices)


def load_prices(path: Path | None = None) -> PriceTable:
    """Load and validate a price file (the packaged ``prices.yaml`` by default).

    Raises CatalogError naming the file, the entry and the field of the first problem found.
    """
    source = path if path is not None else _packaged(PRICES_FILE)
    document = _read_yaml(source)
    if not isinstance(document, dict):
        raise CatalogError(f"{source}: must be a mapping")
    try:
        header = _Header.model_validate(document)
    except ValidationError as exc:
        raise CatalogError(f"{source}: {_describe(exc)}") from None
    entries = _parse_entries(source, header)
    try:
        return PriceTable(
            source=header.source,
            recorded=header.recorded,
            currency=header.currency,
            regions={cloud: name for cloud, name in header.region.items()},
            entries=entries,
        )
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from None


@functools.cache
def default_prices() -> PriceTable:
    """The packaged price table, loaded once."""
    return load_prices()
