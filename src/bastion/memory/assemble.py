"""Context assembly: facts, a summary and recent turns, together within one token budget.

The planner's prompt is the system prompt and tool descriptions (fixed for a caller), the memory
context, and the request. The caller passes the whole prompt's budget and what its fixed parts
take (``reserved_tokens``); the context gets the rest, shared in this order:

1. Facts: the user's facts matching the request's words (BM25 / ``ts_rank``), then the newest
   others, one per line, within `FACTS_SHARE` of the context's budget. Facts come first because
   they are short and a missing one makes the agent ask again what it was told.
2. The session's stored summary of its older turns, if it fits what is left.
3. The turns after the summary, newest first, until the first that does not fit
   (`bastion.memory.context.read_context`).

When turns after the summary no longer all fit and a model is given, the oldest of them are
folded into a new summary (`bastion.memory.summaries`), keeping verbatim only the newest turns
that fit half the room left after a summary's allowance: the next turns fill the other half before
the model is asked again. A summary call that fails is logged and the run goes on without it:
forgetting old turns is better than failing a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.memory.context import estimate_tokens, read_context
from bastion.memory.facts import Fact, FactStore
from bastion.memory.interface import MemoryContext, Turn
from bastion.memory.summaries import (
    MAX_SUMMARY_CHARS,
    StoredSummary,
    read_summary,
    save_summary,
    summarise,
)
from bastion.messages import AgentRequest
from bastion.models.interface import ChatModel
from bastion.storage.engine import begin_write
from bastion.storage.reads import ReadRunner
from bastion.storage.tables import session_turns

logger = logging.getLogger(__name__)

#: The part of the context's budget facts may take at most.
FACTS_SHARE = 0.25
#: Most turns folded into a summary in one model call (the newest of those due, if more).
FOLD_LIMIT = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextPlan:
    """What to assemble for one request."""

    request: AgentRequest
    token_budget: int
    reserved_tokens: int = 0
    facts_limit: int = 5
    #: Turns at or before this time have expired and are never shown (None: no turn TTL).
    turns_since: datetime | None = None


def fit_facts(facts: list[Fact], token_budget: int) -> tuple[tuple[Fact, ...], int]:
    """The facts, in order, that fit `token_budget` together, up to the first that does not."""
    chosen: list[Fact] = []
    used = 0
    for fact in facts:
        cost = estimate_tokens(fact.content)
        if used + cost > token_budget:
            break
        chosen.append(fact)
        used += cost
    return tuple(chosen), used


async def relevant_facts(facts: FactStore, user_id: str, query: str, limit: int) -> list[Fact]:
    """`user_id`'s facts matching `query` first, then their newest others, `limit` in all."""
    if limit < 1:
        return []
    found = await facts.search(user_id, query, limit=limit)
    seen = {fact.fact_id for fact in found}
    for fact in await facts.recent(user_id, limit=limit):
        if len(found) >= limit:
            break
        if fact.fact_id not in seen:
            found.append(fact)
            seen.add(fact.fact_id)
    return found


async def assemble(
    engine: AsyncEngine,
    facts: FactStore,
    plan: ContextPlan,
    *,
    clock: Clock,
    model: ChatModel | None = None,
    reads: ReadRunner | None = None,
) -> MemoryContext:
    """The request's context within ``plan.token_budget - plan.reserved_tokens``.

    `reads` runs the summary's and the turns' reads together (one snapshot, one hand-off on
    SQLite); without it they run on a connection of `engine`.

    Raises:
        ValueError: a budget is negative.
    """
    if plan.token_budget < 0:
        raise ValueError(f"token_budget must not be negative, got {plan.token_budget}")
    if plan.reserved_tokens < 0:
        raise ValueError(f"reserved_tokens must not be negative, got {plan.reserved_tokens}")
    request = plan.request
    available = max(0, plan.token_budget - plan.reserved_tokens)
    candidates = await relevant_facts(facts, request.user_id, request.message, plan.facts_limit)
    chosen_facts, fact_tokens = fit_facts(candidates, int(available * FACTS_SHARE))
    rest = available - fact_tokens
    where = {"session_id": request.session_id, "user_id": request.user_id}

    def read(connection: sa.Connection) -> tuple[StoredSummary | None, MemoryContext]:
        stored = read_summary(connection, **where)
        _, summary_tokens = _shown(stored, rest)
        after = stored.through_turn_id if stored is not None else None
        recent = read_context(
            connection,
            token_budget=rest - summary_tokens,
            after_id=after,
            since=plan.turns_since,
            **where,
        )
        return stored, recent

    if reads is not None:
        stored, recent = await reads.run(read)
    else:
        async with engine.connect() as connection:
            stored, recent = await connection.run_sync(read)
    summary, summary_tokens = _shown(stored, rest)
    covered = stored.turns_covered if stored is not None else 0
    if recent.omitted_turns and model is not None:
        folded = await _fold(engine, plan, stored, rest, model=model, clock=clock)
        if folded is not None:
            new_summary, window, due = folded
            summary, summary_tokens = _shown(new_summary, rest - window.token_count)
            return MemoryContext(
                turns=window.turns,
                token_count=fact_tokens + summary_tokens + window.token_count,
                # The window's left-out turns are the ones just folded (all, up to FOLD_LIMIT).
                omitted_turns=new_summary.turns_covered + max(0, window.omitted_turns - due),
                facts=chosen_facts,
                summary=summary,
                summarised_turns=new_summary.turns_covered if summary else 0,
            )
    return MemoryContext(
        turns=recent.turns,
        token_count=fact_tokens + summary_tokens + recent.token_count,
        omitted_turns=covered + recent.omitted_turns,
        facts=chosen_facts,
        summary=summary,
        summarised_turns=covered if summary else 0,
    )


def _shown(stored: StoredSummary | None, room: int) -> tuple[str | None, int]:
    """The summary's text and tokens if it fits `room`, else nothing."""
    if stored is None:
        return None, 0
    tokens = estimate_tokens(stored.summary)
    return (stored.summary, tokens) if tokens <= room else (None, 0)


async def _fold(
    engine: AsyncEngine,
    plan: ContextPlan,
    stored: StoredSummary | None,
    rest: int,
    *,
    model: ChatModel,
    clock: Clock,
) -> tuple[StoredSummary, MemoryContext, int] | None:
    """Fold the turns left out into a new stored summary; with it the new window and the count."""
    request = plan.request
    where = {"session_id": request.session_id, "user_id": request.user_id}
    allowance = min(rest // 3, estimate_tokens("x" * MAX_SUMMARY_CHARS))
    after = stored.through_turn_id if stored is not None else None
    t = session_turns.c
    async with engine.connect() as connection:
        window = await connection.run_sync(
            lambda sync: read_context(
                sync,
                token_budget=max(0, (rest - allowance) // 2),
                after_id=after,
                since=plan.turns_since,
                **where,
            )
        )
        oldest_kept = window.turns[0].turn_id if window.turns else None
        query = sa.select(t.id, t.role, t.content, t.at, t.run_id).where(
            t.session_id == request.session_id, t.user_id == request.user_id
        )
        if after is not None:
            query = query.where(t.id > after)
        if oldest_kept is not None:
            query = query.where(t.id < oldest_kept)
        rows = (await connection.execute(query.order_by(t.id.desc()).limit(FOLD_LIMIT))).all()
    due = [
        Turn(role=r.role, content=r.content, at=r.at, run_id=r.run_id, turn_id=r.id)
        for r in reversed(rows)
    ]
    if not due:
        return None
    try:
        text = await summarise(model, stored.summary if stored else None, due)
    except Exception:
        # A failed summary must not fail the request: go on with the turns that fit.
        logger.exception("could not summarise session %s", request.session_id)
        return None
    through = due[-1].turn_id
    assert through is not None  # read from the store, so it has its row id
    async with begin_write(engine) as connection:
        covered = await connection.scalar(
            sa.select(sa.func.count()).where(
                t.session_id == request.session_id, t.user_id == request.user_id, t.id <= through
            )
        )
        new = StoredSummary(
            summary=text,
            through_turn_id=through,
            turns_covered=int(covered or 0),
            updated_at=clock.now(),
        )
        await save_summary(connection, summary=new, **where)
    return new, window, len(due)
