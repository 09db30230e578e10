"""What model calls cost: a dated, shipped price table, overridable from settings.

Prices are USD per million tokens, input, output and cached input apart (the input tokens a
provider served from its prompt cache, billed lower; a model without that discount bills them as
input), keyed by our model names (``provider:model``, as
`bastion.models.interface.ChatModel.name` reports them). The shipped table
is a snapshot of the providers' list prices as of `PRICES_VERSION`; prices change, so an app sets
its own in ``settings.cost.prices`` (which win over the table). Models that run here
(``local:*``) or are scripted (``scripted:*``) cost nothing, but are still metered in tokens.

A model with no known price is never assumed free: `price_of` says None and the Cost Controller
refuses the call. All arithmetic is `Decimal`, never float; a cost is exact, then quantized to
`COST_QUANTUM` (1e-8 USD) with half-up rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, localcontext
from types import MappingProxyType

from bastion.models.interface import Usage
from bastion.settings import CostSettings, ModelPrice

#: When the shipped prices were last checked against the providers' price lists.
PRICES_VERSION = "2026-11"
#: Costs are rounded to this (a hundred-millionth of a dollar).
COST_QUANTUM = Decimal("0.00000001")
_PER_MTOK = Decimal(1_000_000)
#: Model-name prefixes of models that cost nothing per token.
FREE_PREFIXES = ("local:", "scripted:")
_FREE = ModelPrice(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))


def _p(input_per_mtok: str, output_per_mtok: str, cached_input_per_mtok: str | None) -> ModelPrice:
    cached = None if cached_input_per_mtok is None else Decimal(cached_input_per_mtok)
    return ModelPrice(
        input_per_mtok=Decimal(input_per_mtok),
        output_per_mtok=Decimal(output_per_mtok),
        cached_input_per_mtok=cached,
    )


#: List prices in USD per million tokens (input, output, cached input or None for no discount),
#: as of `PRICES_VERSION`.
SHIPPED_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        "openai:gpt-4o-mini": _p("0.15", "0.60", "0.075"),
        "openai:gpt-4o": _p("2.50", "10.00", "1.25"),
        "openai:gpt-4.1": _p("2.00", "8.00", "0.50"),
        "openai:gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
        "openai:gpt-4.1-nano": _p("0.10", "0.40", "0.025"),
        "openai:o4-mini": _p("1.10", "4.40", "0.275"),
        "openai:o3": _p("2.00", "8.00", "0.50"),
        "openai:o3-mini": _p("1.10", "4.40", "0.55"),
        "openai:gpt-5": _p("1.25", "10.00", "0.125"),
        "openai:gpt-5-mini": _p("0.25", "2.00", "0.025"),
        "openai:gpt-5-nano": _p("0.05", "0.40", "0.005"),
        "openai:gpt-4-turbo": _p("10.00", "30.00", None),
        "openai:gpt-3.5-turbo": _p("0.50", "1.50", None),
    }
)


class PriceTable:
    """Per-model prices: overrides first, then free local/scripted models, then the shipped table.

    Args:
        settings: the cost section of the settings, whose ``prices`` win over everything else;
            None for the shipped table alone.
    """

    def __init__(self, settings: CostSettings | None = None) -> None:
        self._overrides: dict[str, ModelPrice] = dict(settings.prices) if settings else {}
        self.version = PRICES_VERSION

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None when it is unknown (which must never mean free)."""
        if model in self._overrides:
            return self._overrides[model]
        if model.startswith(FREE_PREFIXES):
            return _FREE
        return SHIPPED_PRICES.get(model)

    def cost(self, model: str, usage: Usage) -> Decimal:
        """The exact cost of `usage` on `model`, quantized to 1e-8 USD.

        The cached part of the input is charged at the cached-input price (the input price when
        the model has none), the rest at the input price. A worst case (no tokens cached) is so
        charged in full.

        Raises:
            LookupError: `model` has no known price.
        """
        price = self.price_of(model)
        if price is None:
            raise LookupError(
                f"no price is known for model {model!r}; add it to settings.cost.prices"
            )
        cached_price = price.cached_input_per_mtok
        if cached_price is None:
            cached_price = price.input_per_mtok
        # Part of the input, never more (a provider reporting more is not trusted to discount).
        cached = max(0, min(usage.cached_input_tokens, usage.input_tokens))
        # A private context: the caller's (possibly lowered) precision must not round money.
        with localcontext() as ctx:
            ctx.prec = 60
            total = (
                (usage.input_tokens - cached) * price.input_per_mtok
                + cached * cached_price
                + usage.output_tokens * price.output_per_mtok
            ) / _PER_MTOK
            return total.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)
