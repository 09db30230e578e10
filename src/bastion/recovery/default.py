"""`PolicyRecovery`: the default Recovery Handler, the rules of `bastion.recovery.policy`.

It holds only what the rules need between calls: the settings, the `Backoff` whose jitter comes
from the injected `random.Random`, and the process-wide `RetryBudget`. It decides and never waits:
the flow sleeps on its clock.
"""

from __future__ import annotations

import random

from bastion.messages import RecoveryAction
from bastion.recovery.interface import Failure, RecoveryHandler
from bastion.recovery.policy import decide
from bastion.resilience.backoff import Backoff
from bastion.resilience.retry_budget import RetryBudget
from bastion.settings import RecoverySettings


class PolicyRecovery(RecoveryHandler):
    """Retries transient failures with full-jitter backoff, falls back, replans or aborts.

    Args:
        settings: Attempts, replans and the backoff's base and cap.
        rng: The jitter's source (seed it in tests).
        budget: The process-wide retry budget (shared with the model and tool wrappers, which
            count calls); None: no budget, only the per-step and per-run caps.
    """

    def __init__(
        self, *, settings: RecoverySettings, rng: random.Random, budget: RetryBudget | None = None
    ) -> None:
        self._settings = settings
        self._backoff = Backoff(base_s=settings.base_delay_s, max_s=settings.max_delay_s, rng=rng)
        self._may_retry = budget.try_spend if budget is not None else _always

    async def decide(self, failure: Failure) -> RecoveryAction:
        return decide(
            failure, settings=self._settings, backoff=self._backoff, may_retry=self._may_retry
        )


def _always() -> bool:
    return True
