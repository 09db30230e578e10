"""Cascade routing: plan with the cheapest model that can, escalate to a stronger one when it can't.

An app declares its models cheap to strong (``settings.cost.cascade``, or ``cascade=`` to
`bastion.AgentSystem.from_settings`). Each run starts on the first, or, when a declared rule
matches the request (``settings.cost.cascade_rules``: a regex on the message, the task's "tags",
mapped to a model of the cascade), on the model the rule names. It moves one rung up when

* the plan fails validation even after the planner's repair rounds (`bastion.errors.PlanError`),
* the Evaluator rejects what a step returned (a weak plan, so the replan goes to a stronger model).

Every move is a run event (``escalate``, with the models and the reason) and the response names
the model that planned last and why (``AgentResponse.model`` and ``model_reason``).

`Cascade` is shared by every run and holds no run state; each run gets its own `CascadeRun`
(`Cascade.for_run`), the `ChatModel` that run plans with. As a plain model, `Cascade` answers
with its first rung, so code unaware of cascades still works.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bastion.errors import ConfigError
from bastion.messages import AgentRequest
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse


@dataclass(frozen=True, slots=True)
class CascadeRule:
    """Start a run on `model` when `pattern` is found in its message."""

    pattern: re.Pattern[str]
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalation:
    """One move up the cascade."""

    from_model: str
    to_model: str
    reason: str


class Cascade(ChatModel):
    """Models from cheap to strong, and the rules that start a run higher up.

    Args:
        models: the rungs, cheapest first (each already wrapped as the app wants: breakers,
            rate limits, durable steps).
        rules: regex → model name (one of `models`); the first rule that matches a request's
            message sets where its run starts.

    Raises:
        ConfigError: no models, two rungs with one name, a rule naming a model not in the
            cascade, or a rule that is not a valid regex.
    """

    def __init__(self, models: Sequence[ChatModel], *, rules: Mapping[str, str] | None = None):
        if not models:
            raise ConfigError("a cascade needs at least one model")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ConfigError(f"a cascade names a model twice: {names}")
        self.models = tuple(models)
        self.rules: tuple[CascadeRule, ...] = tuple(
            _rule(pattern, model, names) for pattern, model in (rules or {}).items()
        )

    @property
    def name(self) -> str:
        return self.models[0].name

    @property
    def wrapped(self) -> ChatModel:
        """The model that answers: the first rung."""
        return self.models[0]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.models[0].complete(request)

    def for_run(self, request: AgentRequest) -> CascadeRun:
        """The model one run plans with, started where the rules say."""
        for rule in self.rules:
            if rule.pattern.search(request.message):
                index = [m.name for m in self.models].index(rule.model)
                reason = f'the request matched the rule "{rule.pattern.pattern}"'
                return CascadeRun(self, index=index, reason=reason)
        return CascadeRun(self, index=0, reason="the cascade's first (cheapest) model")

    async def aclose(self) -> None:
        """Close every rung's client, where it has one."""
        for model in self.models:
            aclose = getattr(model, "aclose", None)
            if aclose is not None:
                await aclose()


class CascadeRun(ChatModel):
    """One run's place on a cascade: answers with its current rung; `escalate` moves it up."""

    def __init__(self, cascade: Cascade, *, index: int, reason: str) -> None:
        self.cascade = cascade
        self.index = index
        #: Why the run is on its current model (shown in the response).
        self.reason = reason

    @property
    def name(self) -> str:
        return self.cascade.models[self.index].name

    @property
    def wrapped(self) -> ChatModel:
        """The model that answers now: the current rung (its tokenizer counts the next call)."""
        return self.cascade.models[self.index]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.cascade.models[self.index].complete(request)

    def escalate(self, reason: str) -> Escalation | None:
        """Move to the next, stronger model; None when the run is on the strongest already."""
        if self.index + 1 >= len(self.cascade.models):
            return None
        before = self.name
        self.index += 1
        self.reason = f"escalated from {before}: {reason}"
        return Escalation(from_model=before, to_model=self.name, reason=reason)


def _rule(pattern: str, model: str, names: Sequence[str]) -> CascadeRule:
    if model not in names:
        raise ConfigError(
            f"cascade rule {pattern!r} names model {model!r}, which is not in the cascade {names}"
        )
    try:
        return CascadeRule(pattern=re.compile(pattern, re.IGNORECASE), model=model)
    except re.error as exc:
        raise ConfigError(f"cascade rule {pattern!r} is not a valid regex: {exc}") from exc
