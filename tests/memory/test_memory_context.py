from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.memory import SqlMemory, Turn, estimate_tokens, fit_newest
from bastion.memory.context import CONTEXT_PAGE_SIZE
from bastion.messages import AgentRequest, AgentResponse, RunStatus
from bastion.testing.clock import FakeClock

_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _turn(content: str) -> Turn:
    return Turn(role="user", content=content, at=_AT)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 4),  # an empty message still costs its framing
        ("abc", 5),
        ("abcd", 6),  # partial tokens round up
        ("é", 5),  # bytes, not characters: two bytes
        ("日本語", 7),  # nine bytes
    ],
)
def test_estimate_counts_utf8_bytes_over_three_plus_framing(text, tokens):
    assert estimate_tokens(text) == tokens


def test_estimate_errs_high_against_a_four_bytes_per_token_tokenizer():
    text = "The quick brown fox jumps over the lazy dog. " * 50
    assert estimate_tokens(text) > len(text.encode()) / 4 + 4


def test_fit_takes_every_turn_that_fits():
    turns = [_turn("a" * 3), _turn("b" * 3)]  # 5 tokens each
    assert fit_newest(turns, 10) == (tuple(turns), 10)


def test_fit_stops_at_the_first_turn_that_does_not_fit_even_if_older_ones_would():
    short, long, older_short = _turn("new"), _turn("x" * 300), _turn("old")
    chosen, tokens = fit_newest([short, long, older_short], 50)
    assert chosen == (short,)
    assert tokens == 5


def test_fit_with_no_budget_takes_nothing():
    assert fit_newest([_turn("hi")], 0) == ((), 0)


def test_fit_of_no_turns_is_empty():
    assert fit_newest([], 100) == ((), 0)


# -- read_context, through SqlMemory ------------------------------------------------------------


def _request(message: str = "hi", *, user: str = "u1", session: str = "s1") -> AgentRequest:
    return AgentRequest(user_id=user, session_id=session, message=message)


async def _exchange(
    memory: SqlMemory,
    clock: FakeClock,
    question: str,
    answer: str,
    *,
    user: str = "u1",
    session: str = "s1",
    run: str | None = None,
) -> None:
    run = run or f"run-{question[:20]}-{clock.monotonic()}"
    request = AgentRequest(user_id=user, session_id=session, message=question, run_id=run)
    response = AgentResponse(run_id=run, status=RunStatus.COMPLETED, message=answer)
    await memory.persist_turns(request, response)
    clock.advance(60)


async def test_turns_come_back_oldest_first_with_roles_times_and_runs(memory, clock):
    first_at = clock.now()
    await _exchange(memory, clock, "hi", "hello", run="r1")
    await _exchange(memory, clock, "order?", "shipped", run="r2")
    context = await memory.load_context(_request("next"), token_budget=1000)
    assert context.turns == (
        Turn(role="user", content="hi", at=first_at, run_id="r1"),
        Turn(role="assistant", content="hello", at=first_at, run_id="r1"),
        Turn(role="user", content="order?", at=first_at + timedelta(seconds=60), run_id="r2"),
        Turn(role="assistant", content="shipped", at=first_at + timedelta(seconds=60), run_id="r2"),
    )
    assert context.token_count == 5 + 6 + 6 + 7
    assert context.omitted_turns == 0


async def test_context_keeps_the_newest_turns_within_budget_and_counts_the_rest(memory, clock):
    for n in range(5):
        await _exchange(memory, clock, f"q{n:02d}", f"a{n:02d}")  # 5 tokens each
    context = await memory.load_context(_request("next"), token_budget=19)
    assert [t.content for t in context.turns] == ["a03", "q04", "a04"]
    assert context.token_count == 15
    assert context.omitted_turns == 7


async def test_context_stops_at_a_turn_that_does_not_fit(memory, clock):
    await _exchange(memory, clock, "old", "old")
    await _exchange(memory, clock, "x" * 300, "new")
    context = await memory.load_context(_request("next"), token_budget=50)
    assert [t.content for t in context.turns] == ["new"]
    assert context.omitted_turns == 3


async def test_a_zero_budget_gives_no_turns_and_counts_them_all(memory, clock):
    await _exchange(memory, clock, "q", "a")
    context = await memory.load_context(_request("next"), token_budget=0)
    assert (context.turns, context.token_count, context.omitted_turns) == ((), 0, 2)


async def test_an_empty_session_gives_an_empty_context(memory):
    context = await memory.load_context(_request("first"), token_budget=100)
    assert (context.turns, context.token_count, context.omitted_turns) == ((), 0, 0)


async def test_a_negative_budget_is_refused(memory):
    with pytest.raises(ValueError, match="token_budget must not be negative"):
        await memory.load_context(_request(), token_budget=-1)


async def test_context_holds_only_this_session(memory, clock):
    await _exchange(memory, clock, "mine", "ok", session="s1")
    await _exchange(memory, clock, "other session", "ok", session="s2")
    context = await memory.load_context(_request(session="s1"), token_budget=1000)
    assert [t.content for t in context.turns] == ["mine", "ok"]
    assert context.omitted_turns == 0


async def test_context_holds_only_this_users_turns_even_in_a_shared_session_id(memory, clock):
    await _exchange(memory, clock, "u1 secret", "ok", user="u1")
    await _exchange(memory, clock, "u2 secret", "ok", user="u2", run="r2")
    context = await memory.load_context(_request(user="u2"), token_budget=1000)
    assert [t.content for t in context.turns] == ["u2 secret", "ok"]
    assert context.omitted_turns == 0


async def test_context_reads_across_pages(memory, clock):
    exchanges = CONTEXT_PAGE_SIZE  # twice as many turns as one page holds
    for n in range(exchanges):
        await _exchange(memory, clock, f"q{n:02d}", f"a{n:02d}")
    context = await memory.load_context(_request("next"), token_budget=10_000)
    assert len(context.turns) == 2 * exchanges
    assert context.turns[0].content == "q00"
    assert context.turns[-1].content == f"a{exchanges - 1:02d}"
    assert context.omitted_turns == 0


async def test_context_reads_only_what_it_needs(memory, clock):
    for n in range(50):
        await _exchange(memory, clock, f"q{n:02d}", f"a{n:02d}")
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "session_turns" in statement:
            statements.append((" ".join(statement.split()), parameters))

    # Every engine: on SQLite the reads run on the memory's own read connections.
    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        context = await memory.load_context(_request("next"), token_budget=20)
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    assert len(context.turns) == 4
    (page, count) = statements
    assert "ORDER BY session_turns.id DESC LIMIT" in page[0]
    session, user, limit = page[1][:3]
    assert (session, user) == ("s1", "u1")
    assert limit == 20 // 4 + 1  # the most turns a budget of 20 could hold, plus one
    assert "count(*)" in count[0]
