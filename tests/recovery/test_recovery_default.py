from __future__ import annotations

import random

from bastion.errors import ModelUnavailable, PlanError
from bastion.messages import Abort, Retry, RunStatus
from bastion.recovery import Failure, PolicyRecovery, RecoveryHandler
from bastion.settings import RecoverySettings


async def test_policy_recovery_retries_with_the_settings_backoff():
    settings = RecoverySettings(max_attempts=5, base_delay_s=1.0, max_delay_s=3.0)
    handler: RecoveryHandler = PolicyRecovery(settings=settings, rng=random.Random(3))
    failure = Failure(reason="503", error=ModelUnavailable("503"), attempt=4)

    delays = []
    for _ in range(200):
        action = await handler.decide(failure)
        assert isinstance(action, Retry)
        delays.append(action.delay_s)

    # Attempt 4 would allow 8 s from the base; the settings' cap of 3 s holds.
    assert all(0 <= d <= 3.0 for d in delays)
    assert max(delays) > 2.5


async def test_policy_recovery_jitter_follows_the_injected_rng():
    settings = RecoverySettings()
    failure = Failure(reason="503", error=ModelUnavailable("503"))

    first = PolicyRecovery(settings=settings, rng=random.Random(11))
    second = PolicyRecovery(settings=settings, rng=random.Random(11))

    assert [await first.decide(failure) for _ in range(5)] == [
        await second.decide(failure) for _ in range(5)
    ]


async def test_policy_recovery_applies_the_settings_attempt_bound():
    handler = PolicyRecovery(settings=RecoverySettings(max_attempts=1), rng=random.Random(0))

    action = await handler.decide(Failure(reason="503", error=ModelUnavailable("503")))

    assert isinstance(action, Abort)
    assert action.status is RunStatus.FAILED


async def test_policy_recovery_aborts_on_a_plan_error():
    handler = PolicyRecovery(settings=RecoverySettings(), rng=random.Random(0))

    action = await handler.decide(Failure(reason="bad plan", error=PlanError("bad plan")))

    assert isinstance(action, Abort)
    assert action.user_message == PlanError.user_message
