"""Choosing which turns of a session the planner sees: token estimates, the budget rule, the read.

The rule is a pure function (`fit_newest`), so it is tested on its own and any store can apply it:
the most recent turns, newest first, until the first that does not fit. Stopping there (rather than
skipping a long turn to fit older short ones) keeps the context one unbroken stretch of the
conversation, which is what a model can follow.

`read_context` applies it to ``session_turns`` reading only what it needs: it walks the session
newest first in keyset pages (``ORDER BY id DESC LIMIT n``), each no larger than the number of turns
the remaining budget could hold plus one, and stops at the first turn that does not fit; counting
what was left out is one index-backed ``COUNT``, made only when something was.

Token counts are estimated, not measured: the store cannot know which model's tokenizer will read
the context. The estimate errs high so that a context never overflows the budget it was built for:
a UTF-8 byte count over 3 (real tokenizers average about 4 bytes a token on English text and rarely
fall under 3 on any language) plus 4 tokens for each message's role and framing (OpenAI's chat
format adds 3 to 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

# One estimate for the whole runtime: the Cost Controller's (bytes / 3, 4 tokens a message).
from bastion.cost.tokens import BYTES_PER_TOKEN, TOKENS_PER_MESSAGE
from bastion.memory.interface import MemoryContext, Turn
from bastion.storage.tables import session_turns

#: Most turns `read_context` reads in one query.
CONTEXT_PAGE_SIZE = 32


def estimate_tokens(text: str) -> int:
    """An estimate, on the high side, of the tokens `text` costs as one chat message."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE


def fit_newest(newest_first: Sequence[Turn], token_budget: int) -> tuple[tuple[Turn, ...], int]:
    """The newest turns that fit `token_budget` together, stopping at the first that does not.

    Args:
        newest_first: candidate turns, newest first.
        token_budget: the most tokens the chosen turns may cost together.

    Returns:
        The chosen turns (a prefix of `newest_first`, still newest first) and their tokens. Fewer
        turns than given means the next one did not fit, so no older turn may be added.
    """
    chosen: list[Turn] = []
    used = 0
    for turn in newest_first:
        cost = estimate_tokens(turn.content)
        if used + cost > token_budget:
            break
        chosen.append(turn)
        used += cost
    return tuple(chosen), used


def read_context(
    connection: sa.Connection,
    *,
    session_id: str,
    user_id: str,
    token_budget: int,
    after_id: int | None = None,
    since: datetime | None = None,
) -> MemoryContext:
    """The newest turns of one user's session that fit `token_budget`, oldest first.

    Args:
        connection: where ``session_turns`` is.
        session_id: whose turns.
        user_id: whose turns (a session id reused by another user reveals nothing).
        token_budget: the most tokens the turns may cost together.
        after_id: only turns with a higher row id (those a summary does not cover).
        since: only turns written after this time (older ones have expired).

    Raises:
        ValueError: `token_budget` is negative.
    """
    if token_budget < 0:
        raise ValueError(f"token_budget must not be negative, got {token_budget}")
    t = session_turns.c
    mine: tuple[sa.ColumnElement[bool], ...] = (t.session_id == session_id, t.user_id == user_id)
    if after_id is not None:
        mine = (*mine, t.id > after_id)
    if since is not None:
        mine = (*mine, t.at > since)
    chosen: list[Turn] = []
    used = 0
    before: int | None = None
    while True:
        # A turn costs at least TOKENS_PER_MESSAGE, so no more than this many can fit; the one
        # extra row shows whether an older turn was left out.
        limit = min(CONTEXT_PAGE_SIZE, (token_budget - used) // TOKENS_PER_MESSAGE + 1)
        query = sa.select(t.id, t.role, t.content, t.at, t.run_id).where(*mine)
        if before is not None:
            query = query.where(t.id < before)
        rows = connection.execute(query.order_by(t.id.desc()).limit(limit)).all()
        page = [
            Turn(role=r.role, content=r.content, at=r.at, run_id=r.run_id, turn_id=r.id)
            for r in rows
        ]
        fitted, tokens = fit_newest(page, token_budget - used)
        chosen.extend(fitted)
        used += tokens
        if len(fitted) < len(page):
            count = sa.select(sa.func.count()).where(*mine, t.id <= rows[len(fitted)].id)
            omitted = int(connection.scalar(count) or 0)
            break
        if len(rows) < limit:
            omitted = 0
            break
        before = rows[-1].id
    return MemoryContext(turns=tuple(reversed(chosen)), token_count=used, omitted_turns=omitted)
