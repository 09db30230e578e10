"""Summaries of a session's older turns: asked of the model once, stored, reused until outgrown.

A session's stored summary covers its turns up to ``through_turn_id``. Each context assembly shows
that summary and the turns after it verbatim; only when those turns no longer fit does the model
fold the oldest of them into a new summary (`fold_prompt`), and the verbatim window then restarts
at half the turns budget, so the next fold comes several turns later rather than at every turn
(the hysteresis is what keeps a long conversation from costing a model call per turn).

A summary is the model's text, so it is cut to `MAX_SUMMARY_CHARS` and always shown to the planner
as what it is: a summary, not the user's words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.memory.interface import Turn
from bastion.models.interface import ChatMessage, ChatModel, ChatRequest
from bastion.storage.engine import upsert
from bastion.storage.tables import memory_summaries

#: The longest summary kept, in characters.
MAX_SUMMARY_CHARS = 2000
#: Output tokens a summary call may use.
SUMMARY_MAX_TOKENS = 300

_INSTRUCTIONS = (
    "You summarise a customer conversation for the assistant that continues it. Keep every fact "
    "that may matter later: names, order numbers, amounts, dates, what was asked, what was done "
    "and what was promised. Write at most 120 words of plain sentences, no lists, nothing else."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSummary:
    """A session's summary as stored."""

    summary: str
    through_turn_id: int
    turns_covered: int
    updated_at: datetime


def fold_prompt(previous: str | None, turns: Sequence[Turn]) -> ChatRequest:
    """The request that folds `turns` (oldest first) into `previous` (None: no summary yet)."""
    lines = [f"{turn.role}: {turn.content}" for turn in turns]
    parts = []
    if previous:
        parts.append(f"Summary so far:\n{previous}")
    parts.append("Turns to add, oldest first:\n" + "\n".join(lines))
    parts.append("Write the new summary.")
    return ChatRequest(
        messages=(
            ChatMessage(role="system", content=_INSTRUCTIONS),
            ChatMessage(role="user", content="\n\n".join(parts)),
        ),
        max_tokens=SUMMARY_MAX_TOKENS,
        temperature=0.0,
    )


async def summarise(model: ChatModel, previous: str | None, turns: Sequence[Turn]) -> str:
    """The model's summary of `previous` plus `turns`, cut to `MAX_SUMMARY_CHARS`.

    Raises:
        ModelError: the model failed (the caller decides to go on without a summary).
        ValueError: the model answered with nothing.
    """
    response = await model.complete(fold_prompt(previous, turns))
    text = " ".join(response.text.split())
    if not text:
        raise ValueError(f"{model.name} returned an empty summary")
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1] + "…"


def read_summary(
    connection: sa.Connection, *, user_id: str, session_id: str
) -> StoredSummary | None:
    """The session's stored summary, or None."""
    s = memory_summaries.c
    row = connection.execute(
        sa.select(memory_summaries).where(s.user_id == user_id, s.session_id == session_id)
    ).one_or_none()
    return None if row is None else _stored(row)


async def save_summary(
    connection: AsyncConnection, *, user_id: str, session_id: str, summary: StoredSummary
) -> None:
    """Insert or replace the session's summary."""
    row = {
        "user_id": user_id,
        "session_id": session_id,
        "summary": summary.summary,
        "through_turn_id": summary.through_turn_id,
        "turns_covered": summary.turns_covered,
        "updated_at": summary.updated_at,
    }
    await connection.execute(
        upsert(connection, memory_summaries, row, keys=("user_id", "session_id"))
    )


def _stored(row: sa.Row[Any]) -> StoredSummary:
    return StoredSummary(
        summary=row.summary,
        through_turn_id=int(row.through_turn_id),
        turns_covered=int(row.turns_covered),
        updated_at=row.updated_at,
    )
