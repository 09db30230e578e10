"""Execute: plan, then for each step route → authorize → sandbox → evaluate → recover.

This stage only calls the components in order and acts on their decisions (the Recovery Handler
decides, this module sleeps on the clock and calls again, as tenacity's `BaseRetrying.iter` returns
`DoSleep` for its caller to act on). The per-step work is constant in the run's length: one step
record appended, a few events, no rescans of the history.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Literal, assert_never

from pydantic import TypeAdapter

from bastion.cost.cascade import Cascade
from bastion.cost.guards import CallCap, LoopGuard
from bastion.cost.metered import MeteredChatModel
from bastion.errors import (
    BastionError,
    BudgetExceeded,
    CircuitOpen,
    InvalidToolArgs,
    ModelError,
    PlanError,
    RunLimitReached,
    UnknownTool,
)
from bastion.flow.approval import await_approval, is_held_for_approval, needs_approval
from bastion.flow.components import Components
from bastion.flow.revision import revise_after_step, revision_feedback
from bastion.flow.state import RunState
from bastion.gate.audit import appended_together
from bastion.gate.interface import Grant
from bastion.memory.interface import MemoryContext
from bastion.messages import (
    Abort,
    AgentPlan,
    EventKind,
    PlanStep,
    RecoveryAction,
    Replan,
    Retry,
    RunStatus,
    StepRecord,
    StepStatus,
    ToolCall,
    ToolErrorKind,
    ToolOutcome,
    UseFallback,
    Verdict,
)
from bastion.models.interface import ChatModel, ChatResponse
from bastion.planner import references as refs
from bastion.planner.interface import PlanningContext
from bastion.recovery.interface import Failure
from bastion.router.interface import ToolSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """Every step of the final plan succeeded (or the plan needed none)."""

    kind: Literal["finished"] = "finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped:
    """The run ends early: `user_message` for the end user, `reason` for operators."""

    kind: Literal["stopped"] = "stopped"
    status: RunStatus
    user_message: str
    reason: str
    #: Planned steps that never ran.
    skipped: tuple[PlanStep, ...] = ()


ExecutionResult = Finished | Stopped

#: Stores a plan's vetting result (the index of the first refused step, and why) as JSON.
_VET: TypeAdapter[tuple[int, ToolOutcome] | None] = TypeAdapter(tuple[int, ToolOutcome] | None)

_OUT_OF_TIME = "Sorry, this request took too long and was stopped. Please try again."
#: The inbox topic on which an operator's decision about an unknown outcome arrives.
OPERATOR_TOPIC = "operator"


def stopped_by(error: BastionError, *, status: RunStatus = RunStatus.ABORTED) -> Stopped:
    """A `Stopped` carrying an error's user message and its operator text."""
    return Stopped(status=status, user_message=error.user_message, reason=str(error))


class Execution:
    """The execute stage of one run."""

    def __init__(self, run: RunState, c: Components, memory: MemoryContext) -> None:
        self._run = run
        self._c = c
        self._memory = memory
        assert run.principal is not None, "admit() sets the principal before execute()"
        self._principal = run.principal
        self._tools = tuple(
            t for t in c.router.describe_all() if c.gate.may_use(self._principal, t)
        )
        #: Retries made in this run, of steps and model calls together (the per-run cap).
        self._retries = 0
        #: Revisions of the remaining steps after successful steps (`bastion.flow.revision`).
        self._revisions = 0
        # A model cascade (`bastion.cost.cascade`) gives each run its own place on it.
        self._cascade = c.model.for_run(run.request) if isinstance(c.model, Cascade) else None
        # Runaway guards (`bastion.cost.guards`): the call cap sits outside metering, so that a
        # refused call reserves nothing.
        self._model: ChatModel = CallCap(
            MeteredChatModel(
                wrapped=self._cascade or c.model,
                cost=c.cost,
                run_id=run.run_id,
                on_call=self._on_model_call,
            ),
            limit=c.settings.run.max_model_calls,
        )
        self._loops = LoopGuard(max_identical=c.settings.run.max_identical_calls)

    async def __call__(self) -> ExecutionResult:
        """Plan, run every step, replan when recovery says so; return how the run ended."""
        run, c = self._run, self._c
        self._start_cascade()
        await run.transition(RunStatus.PLANNING)
        planned = await self._plan(feedback=None)
        if isinstance(planned, Stopped):
            return planned
        pending: deque[PlanStep] = deque(planned.steps)
        if not pending:
            return Finished()
        await run.transition(RunStatus.RUNNING)
        while pending:
            over = self._over_limit(pending)
            if over is not None:
                return over
            step = pending.popleft()
            action = await self._run_step(step)
            if action is None:
                if pending and revise_after_step(c.settings.planner, self._revisions):
                    revised = await self._revise(step)
                    if isinstance(revised, Stopped):
                        return revised
                    pending = deque(revised.steps)
                    await run.transition(RunStatus.RUNNING)
                continue
            if isinstance(action, Abort):
                return self._stop(action.status, action.user_message, action.reason, pending)
            replanned = await self._replan(action)
            if isinstance(replanned, Stopped):
                return replanned
            pending = deque(replanned.steps)
            if not pending:
                return Finished()
            await run.transition(RunStatus.RUNNING)
        return Finished()

    def _start_cascade(self) -> None:
        """Say where the run starts on its cascade; an event when a rule started it higher."""
        if self._cascade is not None:
            self._run.model_reason = self._cascade.reason
            if self._cascade.index > 0:
                self._run.emit(
                    EventKind.ESCALATE, to_model=self._cascade.name, reason=self._cascade.reason
                )

    def _escalate_on_rejection(
        self, step: PlanStep, outcome: ToolOutcome, verdict: Verdict
    ) -> None:
        if outcome.ok:
            # The tool ran and the Evaluator rejected its result: the plan was weak, so the
            # replan (if recovery asks for one) is made by a stronger model.
            self._escalate(f"the evaluator rejected step {step.step_id}: {verdict.reason}")

    def _escalate(self, reason: str) -> bool:
        """Move the run up its cascade, with an event; False without one or at its top."""
        moved = None if self._cascade is None else self._cascade.escalate(reason)
        if moved is None or self._cascade is None:
            return False
        self._run.model_reason = self._cascade.reason
        self._run.emit(
            EventKind.ESCALATE,
            from_model=moved.from_model,
            to_model=moved.to_model,
            reason=moved.reason,
        )
        return True

    def _over_limit(self, pending: deque[PlanStep]) -> Stopped | None:
        """Stop before the next step: the deadline passed, the step cap or a loop is reached."""
        run, c = self._run, self._c
        if run.time_left_s <= 0:
            return self._stop(RunStatus.FAILED, _OUT_OF_TIME, "run deadline passed", pending)
        if len(run.records) >= c.settings.run.max_steps:
            return self._stop(
                RunStatus.ABORTED,
                "Sorry, this request needed too many steps and was stopped.",
                f"step cap of {c.settings.run.max_steps} reached",
                pending,
            )
        loop = self._loops.check(pending[0])
        if loop is not None:
            return self._stop(RunStatus.ABORTED, RunLimitReached.user_message, loop, pending)
        return None

    def _stop(
        self, status: RunStatus, user_message: str, reason: str, pending: deque[PlanStep]
    ) -> Stopped:
        return Stopped(
            status=status, user_message=user_message, reason=reason, skipped=tuple(pending)
        )

    # -- planning ------------------------------------------------------------------------------

    @property
    def _revision(self) -> int:
        """The current plan's revision: replans after failures plus revisions after successes."""
        return self._run.replans + self._revisions

    async def _revise(self, step: PlanStep) -> AgentPlan | Stopped:
        """Revise the remaining steps after `step` succeeded (``replan_after_each_step``)."""
        self._revisions += 1
        reason = revision_feedback(step)
        self._run.emit(EventKind.REPLAN, reason=reason, revision=self._revision, after="success")
        await self._run.transition(RunStatus.PLANNING)
        return await self._plan(feedback=reason)

    async def _replan(self, action: Replan) -> AgentPlan | Stopped:
        run = self._run
        if run.replans >= self._c.settings.recovery.max_replans:
            # A custom RecoveryHandler may ask forever; the flow's own bound holds regardless.
            return Stopped(
                status=RunStatus.ABORTED,
                user_message="Sorry, I could not find a way to complete this request.",
                reason=f"replan limit reached; last reason: {action.reason}",
            )
        run.replans += 1
        run.emit(EventKind.REPLAN, reason=action.reason, revision=self._revision)
        if run.status is not RunStatus.PLANNING:  # a refused fresh plan is replanned in place
            await run.transition(RunStatus.PLANNING)
        return await self._plan(feedback=action.reason)

    async def _plan(self, *, feedback: str | None) -> AgentPlan | Stopped:
        run, c = self._run, self._c
        context = PlanningContext(
            request=run.request,
            tools=self._tools,
            memory=self._memory,
            history=tuple(run.records),
            feedback=feedback,
            revision=self._revision,
        )
        attempt = 1
        while True:
            try:
                plan = await c.planner.plan(context, model=self._model)
            except BudgetExceeded as exc:
                return stopped_by(exc)
            except (ModelError, PlanError, CircuitOpen) as exc:
                if isinstance(exc, PlanError) and self._escalate(
                    "its plan failed validation after repair"
                ):
                    continue
                action = await c.recovery.decide(
                    Failure(
                        reason=str(exc),
                        error=exc,
                        attempt=attempt,
                        replans_used=run.replans,
                        retries_used=self._retries,
                        time_left_s=run.time_left_s,
                    )
                )
                if isinstance(action, Retry):
                    self._retries += 1
                    run.emit(EventKind.RETRY, what="model", attempt=attempt, **_retry_data(action))
                    await c.clock.sleep(action.delay_s)
                    attempt += 1
                    continue
                if isinstance(action, Abort):
                    return Stopped(
                        status=action.status, user_message=action.user_message, reason=action.reason
                    )
                return Stopped(
                    status=RunStatus.FAILED,
                    user_message=exc.user_message,
                    reason=f"recovery answered {action.kind} to a planning failure: {exc}",
                )
            await run.save_plan(plan)
            vetted = await self._vet(plan)
            if vetted is None:
                return plan
            step, outcome = vetted
            verdict = Verdict(passed=False, reason=outcome.error or "", retryable=False)
            action = await self._decide(step, None, outcome, verdict, attempt=1)
            await self._record(step, outcome, verdict, attempts=1, tool_name=step.tool_name)
            if isinstance(action, Abort):
                return Stopped(
                    status=action.status,
                    user_message=action.user_message,
                    reason=action.reason,
                    skipped=tuple(s for s in plan.steps if s.step_id != step.step_id),
                )
            if isinstance(action, Replan):
                return await self._replan(action)
            # Retry or a fallback cannot mend a plan the gate refused: the planner must.
            return await self._replan(Replan(reason=outcome.error or "step refused"))

    async def _vet(self, plan: AgentPlan) -> tuple[PlanStep, ToolOutcome] | None:
        """Authorize every step of a fresh plan before any runs (the gate's first check).

        One checkpointed unit: after a restart the plan's vetting is not redone (nor audited
        twice); the events it implies are emitted outside it, so a replay emits the same ones.
        Step references are checked against what the earlier steps return or returned.
        """
        bad_refs = refs.check_plan(plan.steps, tool=self._tool_or_none, history=self._run.records)

        async def vet() -> tuple[int, ToolOutcome] | None:
            # Nothing acts on these decisions before they are all made: their audit entries are
            # stored together as the vetting ends (one transaction, not one per step).
            async with appended_together():
                return await vet_each()

        async def vet_each() -> tuple[int, ToolOutcome] | None:
            for index, step in enumerate(plan.steps):
                try:
                    spec = self._c.router.get(step.tool_name)
                    if index in bad_refs:
                        raise InvalidToolArgs("; ".join(bad_refs[index]), tool_name=spec.name)
                    if not refs.has_refs(step.tool_args):  # else validated once resolved
                        spec.validate_args(step.tool_args)
                except UnknownTool as exc:
                    return index, ToolOutcome.failure(ToolErrorKind.UNKNOWN_TOOL, str(exc))
                except InvalidToolArgs as exc:
                    return index, ToolOutcome.failure(ToolErrorKind.INVALID_ARGS, str(exc))
                # A referenced value is unknown until its step has run: the gate sees it then.
                known = replace(step, tool_args=refs.without_refs(step.tool_args))
                denied = await self._authorize(known, spec, stage="plan")
                if denied is not None:
                    return index, denied
            return None

        found = await self._c.checkpoints.step(f"vet:{plan.revision}", vet, _VET)
        if found is None:
            return None
        step, outcome = plan.steps[found[0]], found[1]
        self._emit_denied(step, outcome, stage="plan")
        return step, outcome

    def _on_model_call(self, response: ChatResponse, cost: object) -> None:
        run = self._run
        run.model_name = response.model
        if response.fallback_from:
            notice = (
                f"Answered with the fallback model {response.model}: "
                f"{', '.join(response.fallback_from)} was unavailable."
            )
            if notice not in run.degraded:
                run.degraded.append(notice)
            run.emit(
                EventKind.FALLBACK, model=response.model, unavailable=list(response.fallback_from)
            )
        run.count_model_call(response, cost)

    # -- steps ---------------------------------------------------------------------------------

    async def _run_step(self, step: PlanStep) -> Replan | Abort | None:
        """Run one step until it passes (None) or recovery says replan or abort."""
        c = self._c
        try:
            spec = c.router.get(step.tool_name)
            # The resolved args are what the gate authorizes, the sandbox runs and history keeps.
            step = refs.resolve_step(step, self._run.records)
        except (UnknownTool, refs.BadReference) as exc:
            kind = ToolErrorKind.UNKNOWN_TOOL
            if isinstance(exc, refs.BadReference):
                kind = ToolErrorKind.INVALID_ARGS
            outcome = ToolOutcome.failure(kind, str(exc))
            verdict = Verdict(passed=False, reason=str(exc))
            action = await self._decide(step, None, outcome, verdict, attempt=1)
            await self._record(step, outcome, verdict, attempts=1, tool_name=step.tool_name)
            return action if isinstance(action, Replan | Abort) else _abort_for(step, outcome)
        attempt, tried = 1, {spec.name}
        while True:
            outcome = await self._call(step, spec, attempt)
            if outcome.error_kind is ToolErrorKind.UNKNOWN_OUTCOME:
                decision = await self._ask_operator(step, spec, outcome)
                if decision == "retry":
                    attempt += 1
                    continue
                if decision == "skip":
                    confirmed = ToolOutcome.success({"confirmed_by_operator": True})
                    await self._record(step, confirmed, Verdict.ok(), attempt, tool_name=spec.name)
                    return None
                unknown = Verdict(passed=False, reason=outcome.error or "unknown outcome")
                await self._record(step, outcome, unknown, attempt, tool_name=spec.name)
                return Abort(
                    reason=f"step {step.step_id} ({spec.name}): {outcome.error}; operator: abort",
                    user_message=(
                        f"Sorry, I could not confirm this step: {step.description}. A member of "
                        "our team will check whether it was done."
                    ),
                )
            verdict = await c.evaluator.evaluate(step, spec, outcome)
            if verdict.passed:
                await self._record(step, outcome, verdict, attempts=attempt, tool_name=spec.name)
                return None
            self._escalate_on_rejection(step, outcome, verdict)
            action = await self._decide(step, spec, outcome, verdict, attempt=attempt)
            match action:
                case Retry():
                    self._retries += 1
                    self._run.emit(
                        EventKind.RETRY,
                        step_id=step.step_id,
                        attempt=attempt,
                        **_retry_data(action),
                    )
                    await c.clock.sleep(action.delay_s)
                    attempt += 1
                case UseFallback():
                    fallback = self._fallback(action, tried)
                    if fallback is None:
                        await self._record(step, outcome, verdict, attempt, tool_name=spec.name)
                        return _abort_for(step, outcome)
                    self._run.emit(
                        EventKind.FALLBACK,
                        step_id=step.step_id,
                        from_tool=spec.name,
                        to_tool=fallback.name,
                        reason=action.reason,
                    )
                    spec, attempt = fallback, 1
                    tried.add(spec.name)
                case Replan() | Abort():
                    await self._record(step, outcome, verdict, attempt, tool_name=spec.name)
                    return action
                case _:
                    assert_never(action)

    async def _ask_operator(self, step: PlanStep, spec: ToolSpec, outcome: ToolOutcome) -> str:
        """Pause until a person decides: ``retry`` the call, ``skip`` it as done, or ``abort``.

        Never re-runs a non-idempotent call on its own: the process died during it, so it may
        have taken effect. Without an inbox (no durable execution) nobody could answer: abort.
        """
        run, c = self._run, self._c
        if c.inbox is None:
            return "abort"
        await run.transition(RunStatus.AWAITING_OPERATOR)
        run.emit(
            EventKind.OPERATOR,
            step_id=step.step_id,
            tool_name=spec.name,
            question=outcome.error,
            choices=["retry", "skip", "abort"],
        )
        await run.flush()
        run.pause_deadline()
        message = await c.inbox.receive(
            OPERATOR_TOPIC, timeout_s=c.settings.durable.operator_wait_s
        )
        decision = str(message.get("action")) if message else "abort"
        if decision not in ("retry", "skip", "abort"):
            decision = "abort"
        run.emit(
            EventKind.OPERATOR,
            step_id=step.step_id,
            decision=decision,
            by=message.get("by") if message else None,
            note=message.get("note") if message else "no decision before the wait expired",
        )
        if decision != "abort":
            run.restart_deadline(run.request.timeout_s or c.settings.run.timeout_s)
            await run.transition(RunStatus.RUNNING)
        return decision

    def _tool_or_none(self, name: str) -> ToolSpec | None:
        try:
            return self._c.router.get(name)
        except UnknownTool:
            return None

    def _fallback(self, action: UseFallback, tried: set[str]) -> ToolSpec | None:
        if action.tool_name in tried:
            return None  # a fallback cycle: each tool is tried once per step
        try:
            return self._c.router.get(action.tool_name)
        except UnknownTool:
            return None

    async def _call(self, step: PlanStep, spec: ToolSpec, attempt: int) -> ToolOutcome:
        run, c = self._run, self._c
        run.emit(
            EventKind.STEP_STARTED,
            step_id=step.step_id,
            tool_name=spec.name,
            description=step.description,
            attempt=attempt,
        )
        try:
            args = spec.validate_args(step.tool_args)
        except InvalidToolArgs as exc:
            outcome = ToolOutcome.failure(ToolErrorKind.INVALID_ARGS, str(exc))
        else:

            async def authorized_call(grant: Grant | None = None) -> ToolOutcome:
                # The gate's second check and the call are one unit: interrupted before the call
                # completed, both run afresh; once it completed, neither is redone.
                denied = await self._authorize(step, spec, stage="execute", grant=grant)
                if denied is not None:
                    return denied
                unpaid = await self._charge(step, spec, attempt)
                if unpaid is not None:
                    return unpaid
                call = ToolCall(
                    run_id=run.run_id,
                    step_id=step.step_id,
                    tool_name=spec.name,
                    args=args,
                    attempt=attempt,
                )
                return await c.sandbox.run(
                    call, spec, deadline=run.deadline, principal=self._principal
                )

            outcome = await c.checkpoints.call(spec, authorized_call)
            if is_held_for_approval(outcome):
                reason = outcome.error or ""
                granted = await await_approval(
                    run,
                    c,
                    step=step,
                    spec=spec,
                    args=step.tool_args,
                    reason=reason,
                    attempt=attempt,
                )
                if isinstance(granted, Grant):
                    outcome = await c.checkpoints.call(spec, lambda: authorized_call(granted))
                else:
                    outcome = granted
            self._emit_denied(step, outcome, stage="execute")
        run.emit(
            EventKind.STEP_FINISHED,
            step_id=step.step_id,
            tool_name=spec.name,
            ok=outcome.ok,
            error_kind=outcome.error_kind.value if outcome.error_kind else None,
            error=outcome.error,
            duration_s=round(outcome.duration_s, 6),
        )
        return outcome

    async def _charge(self, step: PlanStep, spec: ToolSpec, attempt: int) -> ToolOutcome | None:
        """Pay a priced tool's call from the run's budgets; a denied outcome if they can't."""
        if spec.cost_usd <= 0:
            return None
        try:
            await self._c.cost.charge(
                self._run.run_id,
                f"tool:{spec.name}",
                spec.cost_usd,
                key=f"tool:{step.step_id}:{attempt}",
            )
        except BudgetExceeded as exc:
            return ToolOutcome.failure(ToolErrorKind.DENIED, str(exc))
        return None

    async def _authorize(
        self,
        step: PlanStep,
        spec: ToolSpec,
        *,
        stage: Literal["plan", "execute"],
        grant: Grant | None = None,
    ) -> ToolOutcome | None:
        decision = await self._c.gate.authorize(
            self._principal, spec, step.tool_args, stage=stage, run_id=self._run.run_id, grant=grant
        )
        if decision.allowed:
            return None
        if decision.needs_approval:
            # At plan time such a call is marked, not refused: the run asks when it gets there.
            return None if stage == "plan" else needs_approval(decision.reason)
        return ToolOutcome.failure(ToolErrorKind.DENIED, decision.reason)

    def _emit_denied(
        self, step: PlanStep, outcome: ToolOutcome, *, stage: Literal["plan", "execute"]
    ) -> None:
        if outcome.error_kind is ToolErrorKind.DENIED:
            self._run.emit(
                EventKind.DENIED,
                step_id=step.step_id,
                tool_name=step.tool_name,
                stage=stage,
                reason=outcome.error,
            )

    async def _decide(
        self,
        step: PlanStep,
        spec: ToolSpec | None,
        outcome: ToolOutcome,
        verdict: Verdict,
        *,
        attempt: int,
    ) -> RecoveryAction:
        return await self._c.recovery.decide(
            Failure(
                reason=verdict.reason or outcome.error or "step failed",
                step=step,
                spec=spec,
                outcome=outcome,
                verdict=verdict,
                attempt=attempt,
                replans_used=self._run.replans,
                retries_used=self._retries,
                time_left_s=self._run.time_left_s,
            )
        )

    async def _record(
        self,
        step: PlanStep,
        outcome: ToolOutcome,
        verdict: Verdict,
        attempts: int,
        *,
        tool_name: str,
    ) -> None:
        if verdict.passed:
            status = StepStatus.SUCCESS
        elif outcome.error_kind is ToolErrorKind.DENIED:
            status = StepStatus.DENIED
        else:
            status = StepStatus.FAILED
        await self._run.record_step(
            StepRecord(
                step=step,
                status=status,
                outcome=outcome,
                verdict=verdict,
                attempts=attempts,
                plan_revision=self._revision,
                tool_name=tool_name,
            )
        )


def _retry_data(action: Retry) -> dict[str, object]:
    return {"delay_s": round(action.delay_s, 3), "reason": action.reason}


def _abort_for(step: PlanStep, outcome: ToolOutcome) -> Abort:
    return Abort(
        reason=f"step {step.step_id} ({step.tool_name}) failed: {outcome.error}",
        user_message=f"Sorry, I could not complete this step: {step.description}.",
    )
