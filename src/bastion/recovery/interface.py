"""The Recovery Handler's contract: from a failure to a `RecoveryAction` (it decides, flow acts)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from bastion.errors import BastionError
from bastion.messages import PlanStep, RecoveryAction, ToolOutcome, Verdict
from bastion.router.interface import ToolSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Something went wrong: a step (outcome or verdict) or a model call (error)."""

    reason: str
    #: None when the failure is in planning (a model call), not in a step.
    step: PlanStep | None = None
    spec: ToolSpec | None = None
    outcome: ToolOutcome | None = None
    verdict: Verdict | None = None
    #: A raised error (a `ModelError`, `PlanError`, `CircuitOpen` ...), for model-call failures.
    error: BastionError | None = None
    #: Attempts already made of this step (or this model call), counting the one that failed.
    attempt: int = 1
    #: Replans already used in this run.
    replans_used: int = 0
    #: Retries already made in this run (of every step and model call together).
    retries_used: int = 0
    #: Seconds left before the run's deadline.
    time_left_s: float = math.inf


class RecoveryHandler(Protocol):
    """Chooses what to do about a failure. Never raises, never sleeps: the flow does the waiting."""

    async def decide(self, failure: Failure) -> RecoveryAction: ...
