from __future__ import annotations

from decimal import Decimal, localcontext

import pytest

from bastion.cost.pricing import PRICES_VERSION, SHIPPED_PRICES, PriceTable
from bastion.models.interface import Usage
from bastion.settings import CostSettings, ModelPrice


def price(inp: str, out: str) -> ModelPrice:
    return ModelPrice(input_per_mtok=Decimal(inp), output_per_mtok=Decimal(out))


def test_shipped_table_is_dated() -> None:
    assert PRICES_VERSION == "2026-11"
    assert PriceTable().version == "2026-11"


@pytest.mark.parametrize(
    ("model", "inp", "out"),
    [
        ("openai:gpt-4o-mini", "0.15", "0.60"),
        ("openai:gpt-4o", "2.50", "10.00"),
        ("openai:gpt-4.1", "2.00", "8.00"),
        ("openai:gpt-4.1-mini", "0.40", "1.60"),
        ("openai:gpt-4.1-nano", "0.10", "0.40"),
        ("openai:o4-mini", "1.10", "4.40"),
    ],
)
def test_shipped_prices(model: str, inp: str, out: str) -> None:
    assert PriceTable().price_of(model) == price(inp, out)


def test_every_shipped_price_is_a_provider_model_with_decimal_prices() -> None:
    for model, p in SHIPPED_PRICES.items():
        provider, _, name = model.partition(":")
        assert provider, model
        assert name, model
        assert isinstance(p.input_per_mtok, Decimal)
        assert p.output_per_mtok >= p.input_per_mtok >= 0


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
    assert table.price_of("openai:gpt-4o") == price("2.50", "10.00")


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
