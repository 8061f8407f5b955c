"""The packaged GPU instance price table: contents, agreement with the SKU catalog, lookups,
validation and the source line printed next to a price."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from presets.catalog import CatalogError, default_catalog
from presets.catalog.prices import Price, PriceTable, default_prices, load_prices

GOOD_HEADER: dict[str, object] = {
    "source": "Hand-recorded test prices.",
    "recorded": "2026-11-21",
    "currency": "USD",
    "unit": "hour",
    "region": {"azure": "East US", "aws": "us-east-1"},
}
GOOD_PRICE: dict[str, object] = {
    "sku": "Standard_Test_v1",
    "cloud": "azure",
    "usd_per_hour": 1.5,
}


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return default_prices()


def write_prices(tmp_path: Path, rows: list[dict[str, object]], **header: object) -> Path:
    path = tmp_path / "prices.yaml"
    document = {**GOOD_HEADER, **header, "prices": rows}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_the_packaged_table_loads(prices: PriceTable) -> None:
    assert prices.currency == "USD"
    assert prices.recorded == "2026-11-21"
    assert "recorded by hand" in prices.source
    assert "not fetched by a script" in prices.source
    assert dict(prices.regions) == {"azure": "East US", "aws": "us-east-1"}
    assert len(prices.entries) == 43
    assert {p.cloud for p in prices.entries} == {"azure", "aws"}
    assert all(p.usd_per_hour > 0 for p in prices.entries)


def test_every_price_names_a_catalog_sku_of_the_same_cloud(prices: PriceTable) -> None:
    catalog = default_catalog()
    for price in prices.entries:
        sku = catalog.sku(price.sku)
        assert sku is not None, f"{price.sku} is not in skus.yaml"
        assert sku.name == price.sku, f"{price.sku} is spelled {sku.name} in skus.yaml"
        assert sku.cloud == price.cloud, f"{price.sku}: {price.cloud} here, {sku.cloud} there"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Standard_NC6s_v3", Price("Standard_NC6s_v3", "azure", 3.06)),
        ("standard_nc24ads_a100_v4", Price("Standard_NC24ads_A100_v4", "azure", 3.673)),
        (" STANDARD_ND96ISR_H100_V5 ", Price("Standard_ND96isr_H100_v5", "azure", 98.32)),
        ("G5.XLARGE", Price("g5.xlarge", "aws", 1.006)),
        ("p4d.24xlarge", Price("p4d.24xlarge", "aws", 32.77)),
    ],
)
def test_prices_are_found_in_any_case(prices: PriceTable, name: str, expected: Price) -> None:
    assert prices.price(name) == expected


def test_an_unknown_sku_has_no_price(prices: PriceTable) -> None:
    assert prices.price("Standard_NoSuch_v9") is None
    assert prices.price("") is None


def test_the_table_is_immutable(prices: PriceTable) -> None:
    price = prices.price("g6.xlarge")
    assert price is not None
    with pytest.raises(AttributeError):
        price.usd_per_hour = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        prices.regions["aws"] = "eu-west-1"  # type: ignore[index]


@pytest.mark.parametrize(("cloud", "region"), [("azure", "East US"), ("AWS", "us-east-1")])
def test_the_source_line_names_the_region_and_the_date(
    prices: PriceTable, cloud: str, region: str
) -> None:
    line = prices.describe_source(cloud)
    assert line.startswith(f"USD list price, {region}, recorded 2026-11-21 (Public pay-as-you-go")
    assert line.endswith("check the provider before budgeting.)")


def test_a_valid_custom_file_loads(tmp_path: Path) -> None:
    table = load_prices(write_prices(tmp_path, [GOOD_PRICE]))
    assert table.price("STANDARD_TEST_V1") == Price("Standard_Test_v1", "azure", 1.5)
    assert table.describe_source("azure") == (
        "USD list price, East US, recorded 2026-11-21 (Hand-recorded test prices.)"
    )


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (
            [{**GOOD_PRICE, "usd_per_hour": -1.0}],
            {},
            "prices.yaml: price 'Standard_Test_v1': field 'usd_per_hour': Input should be "
            "greater than 0",
        ),
        (
            [{**GOOD_PRICE, "usd_per_hour": "1.5"}],
            {},
            "price 'Standard_Test_v1': field 'usd_per_hour': Input should be a valid number",
        ),
        (
            [GOOD_PRICE, {**GOOD_PRICE, "sku": "STANDARD_TEST_V1"}],
            {},
            "prices.yaml: price 'STANDARD_TEST_V1': field 'sku': duplicate instance type",
        ),
        (
            [{**GOOD_PRICE, "spot": True}],
            {},
            "prices.yaml: price 'Standard_Test_v1': field 'spot': Extra inputs",
        ),
        (
            [{**GOOD_PRICE, "cloud": "gcp"}],
            {},
            "price 'Standard_Test_v1': field 'cloud'",
        ),
        (
            [{**GOOD_PRICE, "cloud": "azure-arc"}],
            {},
            "price 'Standard_Test_v1': field 'cloud': no region is recorded for 'azure-arc'",
        ),
        (
            [{"cloud": "azure", "usd_per_hour": 1.0}],
            {},
            "price #1: field 'sku': Field required",
        ),
        ([GOOD_PRICE], {"vendor": "x"}, "prices.yaml: field 'vendor': Extra inputs"),
        ([GOOD_PRICE], {"currency": "EUR"}, "prices.yaml: field 'currency': Input should be 'USD'"),
        ([GOOD_PRICE], {"recorded": "2026-13-40"}, "prices.yaml: field 'recorded'"),
    ],
    ids=[
        "a negative price is refused",
        "a price given as text is refused",
        "an instance type listed twice is refused",
        "an unknown key in an entry is refused",
        "an unknown cloud is refused",
        "a cloud without a region is refused",
        "an entry without a sku is refused by position",
        "an unknown top-level key is refused",
        "a currency other than USD is refused",
        "an impossible date is refused",
    ],
)
def test_a_bad_price_file_is_refused_naming_the_entry_and_field(
    tmp_path: Path,
    rows: list[dict[str, object]],
    header: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)):
        load_prices(write_prices(tmp_path, rows, **header))


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("- sku: x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"prices\.yaml: must be a mapping"):
        load_prices(path)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot be read"):
        load_prices(tmp_path / "missing.yaml")
