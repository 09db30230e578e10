from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.resilience.retry_budget import RetryBudget
from bastion.testing.clock import FakeClock


def test_each_call_deposits_the_ratio_and_a_retry_takes_one() -> None:
    budget = RetryBudget(ratio=0.25, min_per_s=0.0, clock=FakeClock())

    assert not budget.try_spend()
    for _ in range(4):
        budget.record_call()

    assert budget.try_spend()
    assert not budget.try_spend()
    assert (budget.calls, budget.retries, budget.refused) == (4, 1, 2)


def test_time_refills_at_min_per_s_up_to_the_cap() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_s=2.0, clock=clock, max_tokens=3)
    assert budget.tokens == 2.0  # starts with one second's worth

    clock.advance(100.0)

    assert budget.tokens == 3.0
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert budget.try_spend()


def test_a_long_healthy_spell_cannot_bank_a_storm() -> None:
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, clock=FakeClock(), max_tokens=5)
    for _ in range(10_000):
        budget.record_call()

    assert sum(budget.try_spend() for _ in range(100)) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": -0.1}, "ratio must be in"),
        ({"ratio": 1.5}, "ratio must be in"),
        ({"min_per_s": -1.0}, "min_per_s must not be negative"),
        ({"max_tokens": 0.5}, "max_tokens must be at least 1"),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"ratio": 0.1, "min_per_s": 1.0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        RetryBudget(clock=FakeClock(), **args)
