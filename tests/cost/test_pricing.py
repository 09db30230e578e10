from __future__ import annotations

import json
from decimal import Decimal, localcontext

import pytest

from bastion.cost.pricing import PRICES_VERSION, SHIPPED_PRICES, PriceTable
from bastion.models.interface import Usage
from bastion.settings import CostSettings, ModelPrice, load_settings


def price(inp: str, out: str, cached: str | None = None) -> ModelPrice:
    return ModelPrice(
        input_per_mtok=Decimal(inp),
        output_per_mtok=Decimal(out),
        cached_input_per_mtok=None if cached is None else Decimal(cached),
    )


def test_shipped_table_is_dated() -> None:
    assert PRICES_VERSION == "2026-11"
    assert PriceTable().version == "2026-11"


@pytest.mark.parametrize(
    ("model", "inp", "out", "cached"),
    [
        ("openai:gpt-4o-mini", "0.15", "0.60", "0.075"),
        ("openai:gpt-4o", "2.50", "10.00", "1.25"),
        ("openai:gpt-4.1", "2.00", "8.00", "0.50"),
        ("openai:gpt-4.1-mini", "0.40", "1.60", "0.10"),
        ("openai:gpt-4.1-nano", "0.10", "0.40", "0.025"),
        ("openai:o4-mini", "1.10", "4.40", "0.275"),
        ("openai:o3", "2.00", "8.00", "0.50"),
        ("openai:o3-mini", "1.10", "4.40", "0.55"),
        ("openai:gpt-5", "1.25", "10.00", "0.125"),
        ("openai:gpt-5-mini", "0.25", "2.00", "0.025"),
        ("openai:gpt-5-nano", "0.05", "0.40", "0.005"),
        ("openai:gpt-4-turbo", "10.00", "30.00", None),
        ("openai:gpt-3.5-turbo", "0.50", "1.50", None),
    ],
)
def test_shipped_prices(model: str, inp: str, out: str, cached: str | None) -> None:
    assert PriceTable().price_of(model) == price(inp, out, cached)


def test_every_shipped_price_is_a_provider_model_with_decimal_prices() -> None:
    for model, p in SHIPPED_PRICES.items():
        provider, _, name = model.partition(":")
        assert provider, model
        assert name, model
        assert isinstance(p.input_per_mtok, Decimal)
        assert p.output_per_mtok >= p.input_per_mtok >= 0
        if p.cached_input_per_mtok is not None:  # a discount, never a surcharge
            assert isinstance(p.cached_input_per_mtok, Decimal)
            assert p.input_per_mtok > p.cached_input_per_mtok > 0


@pytest.mark.parametrize("model", ["scripted:demo", "local:qwen2.5-coder-1.5b", "local:x"])
def test_scripted_and_local_models_are_free(model: str) -> None:
    table = PriceTable()
    assert table.price_of(model) == price("0", "0")
    assert table.cost(model, Usage(input_tokens=10**9, output_tokens=10**9)) == 0


def test_unknown_model_has_no_price_and_no_cost() -> None:
    table = PriceTable()
    assert table.price_of("openai:foo") is None
    assert table.price_of("gpt-4o-mini") is None  # our names carry the provider
    with pytest.raises(LookupError, match="no price is known for model 'openai:foo'"):
        table.cost("openai:foo", Usage(input_tokens=1))


def test_overrides_win_over_the_table_and_the_free_prefixes() -> None:
    table = PriceTable(
        CostSettings(
            prices={
                "openai:gpt-4o-mini": price("1", "2"),
                "local:big": price("0.5", "0.5"),
                "vllm:llama": price("0.01", "0.02"),
            }
        )
    )
    assert table.price_of("openai:gpt-4o-mini") == price("1", "2")
    assert table.price_of("local:big") == price("0.5", "0.5")
    assert table.price_of("vllm:llama") == price("0.01", "0.02")
    assert table.price_of("openai:gpt-4o") == price("2.50", "10.00", "1.25")


def test_cost_is_exact_decimal() -> None:
    cost = PriceTable().cost("openai:gpt-4o-mini", Usage(input_tokens=1234, output_tokens=567))
    # 1234 * 0.15 / 1e6 + 567 * 0.60 / 1e6 = 0.0001851 + 0.0003402
    assert cost == Decimal("0.0005253")
    assert isinstance(cost, Decimal)
    assert cost.as_tuple().exponent == -8


def test_cost_of_many_calls_adds_up_exactly() -> None:
    table = PriceTable()
    one = table.cost("openai:gpt-4.1-nano", Usage(input_tokens=1, output_tokens=1))
    assert one == Decimal("0.0000005")
    assert sum([one] * 1_000_000, Decimal(0)) == Decimal("0.5")


@pytest.mark.parametrize(
    ("input_per_mtok", "expected"),
    [("0.005", "0.00000001"), ("0.00499", "0"), ("0.015", "0.00000002")],
)
def test_cost_is_quantized_half_up_to_1e_8(input_per_mtok: str, expected: str) -> None:
    table = PriceTable(CostSettings(prices={"x:m": price(input_per_mtok, "0")}))
    assert table.cost("x:m", Usage(input_tokens=1)) == Decimal(expected)


def test_cost_ignores_a_lowered_decimal_precision() -> None:
    table = PriceTable()
    with localcontext() as ctx:
        ctx.prec = 3
        cost = table.cost("openai:gpt-4o", Usage(input_tokens=123_457, output_tokens=98_765))
    assert cost == Decimal("1.2962925")  # 0.3086425 + 0.98765


def test_cached_input_is_charged_at_the_cached_price_and_the_rest_at_the_input_price() -> None:
    table = PriceTable()
    usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=100)
    # 600 * 2.50 / 1e6 + 400 * 1.25 / 1e6 + 100 * 10.00 / 1e6 = 0.0015 + 0.0005 + 0.001
    assert table.cost("openai:gpt-4o", usage) == Decimal("0.003")
    # gpt-5-nano: 999 * 0.05 + 1 * 0.005 = 49.955 per 1e6 tokens, exactly, then quantized
    nano = table.cost("openai:gpt-5-nano", Usage(input_tokens=1000, cached_input_tokens=1))
    assert nano == Decimal("0.00004996")
    assert isinstance(nano, Decimal)
    # The worst case a reservation holds counts nothing as cached: the full input price.
    assert table.cost("openai:gpt-4o", Usage(input_tokens=1000, output_tokens=100)) == Decimal(
        "0.0035"
    )


def test_a_model_without_a_cached_price_charges_cached_tokens_as_input() -> None:
    table = PriceTable(CostSettings(prices={"x:m": price("2", "8")}))
    cached = Usage(input_tokens=1000, cached_input_tokens=1000, output_tokens=10)
    assert table.cost("x:m", cached) == table.cost(
        "x:m", Usage(input_tokens=1000, output_tokens=10)
    )
    assert table.cost("openai:gpt-4-turbo", Usage(input_tokens=10, cached_input_tokens=10)) == (
        Decimal("0.0001")
    )


def test_more_cached_tokens_than_input_tokens_discount_no_more_than_the_input() -> None:
    table = PriceTable()
    odd = Usage(input_tokens=100, cached_input_tokens=1000)
    assert table.cost("openai:gpt-4o", odd) == table.cost(
        "openai:gpt-4o", Usage(input_tokens=100, cached_input_tokens=100)
    )
    assert table.cost("openai:gpt-4o", odd) == Decimal("0.000125")


def test_a_cached_price_is_overridden_in_settings_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = CostSettings.model_validate(
        {
            "prices": {
                "openai:gpt-4o": {
                    "input_per_mtok": "2",
                    "output_per_mtok": "8",
                    "cached_input_per_mtok": "0.2",
                }
            }
        }
    )
    table = PriceTable(settings)
    usage = Usage(input_tokens=1000, cached_input_tokens=500)
    assert table.cost("openai:gpt-4o", usage) == Decimal("0.0011")  # 500 * 2 + 500 * 0.2
    # An override without a cached price drops the shipped discount: cached costs input.
    plain = PriceTable(CostSettings(prices={"openai:gpt-4o": price("2", "8")}))
    assert plain.cost("openai:gpt-4o", usage) == Decimal("0.002")
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        price("1", "1", "-0.1")
    rates = {"input_per_mtok": "1", "output_per_mtok": "2", "cached_input_per_mtok": "0.1"}
    monkeypatch.setenv("BASTION_COST__PRICES", json.dumps({"vllm:m": rates}))
    from_env = load_settings().cost.prices["vllm:m"]
    assert from_env == price("1", "2", "0.1")
