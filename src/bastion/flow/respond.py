"""Respond: compose the answer from what the steps returned, persist it, build the response.

The answer is composed from tool results, never from the model's free text, so it can never claim
what no tool returned. An app supplies its own `AnswerComposer` (the support demo words each tool's
result for a customer); the default lists each step's outcome plainly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bastion.messages import AgentRequest, StepRecord

#: Turns a completed run's step records into the answer shown to the user.
AnswerComposer = Callable[[AgentRequest, Sequence[StepRecord]], str]
