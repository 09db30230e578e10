"""The recovery rule for a final answer the Evaluator rejected: withhold it, never replan."""

from __future__ import annotations

import random

from bastion.messages import Abort, RunStatus, Verdict
from bastion.recovery.interface import Failure
from bastion.recovery.policy import ANSWER_WITHHELD, OUT_OF_TIME, decide
from bastion.resilience.backoff import Backoff
from bastion.settings import RecoverySettings


def _decide(failure: Failure):
    settings = RecoverySettings()
    backoff = Backoff(base_s=0.5, max_s=8.0, rng=random.Random(0))
    return decide(failure, settings=settings, backoff=backoff)


def test_a_rejected_answer_is_withheld_as_failed_even_with_replans_left():
    verdict = Verdict(passed=False, reason="the answer claims a refund no step did")
    action = _decide(Failure(reason="final answer rejected", verdict=verdict, replans_used=0))
    assert isinstance(action, Abort)
    assert action.status is RunStatus.FAILED
    assert action.user_message == ANSWER_WITHHELD
    assert "claims a refund" in action.reason


def test_out_of_time_wins_over_the_answer_rule():
    verdict = Verdict(passed=False, reason="x")
    action = _decide(Failure(reason="r", verdict=verdict, time_left_s=0))
    assert isinstance(action, Abort)
    assert action.user_message == OUT_OF_TIME
