"""Long-term facts in `SqlMemory`: full-text search per user, idempotent writes, TTL."""

from __future__ import annotations

import pytest

from bastion.memory import SqlMemory
from bastion.messages import AgentRequest
from bastion.testing.clock import FakeClock

DAY_S = 86400.0


def _request(message: str, *, user: str = "u1", session: str = "s2") -> AgentRequest:
    return AgentRequest(user_id=user, session_id=session, message=message)


async def test_a_fact_written_in_one_session_is_in_the_next_sessions_context(memory):
    await memory.remember("u1", "Prefers to be contacted by email", source="tool")
    context = await memory.load_context(
        _request("Please get someone to contact me about my order", session="s2"),
        token_budget=1000,
    )
    assert [fact.content for fact in context.facts] == ["Prefers to be contacted by email"]
    assert context.token_count <= 1000


async def test_facts_are_never_returned_for_another_user(memory):
    await memory.remember("u1", "Prefers to be contacted by email")
    await memory.remember("u1", "Lives in Lisbon")
    assert await memory.recall("u2", "contacted by email Lisbon") == []
    context = await memory.load_context(
        _request("contacted by email Lisbon", user="u2"), token_budget=1000
    )
    assert context.facts == ()
    # ... while the owner finds them by the same words.
    assert len(await memory.recall("u1", "contacted by email Lisbon")) == 2


async def test_search_ranks_the_better_match_first_and_stems_words(memory):
    await memory.remember("u1", "Has a dog called Pixel")
    await memory.remember("u1", "Prefers email; never call, email only")
    await memory.remember("u1", "Wants emails in Portuguese")
    found = await memory.recall("u1", "Which email address should we use?")
    # "emails" matched "email" (stemming); the fact saying it twice ranks first.
    assert [fact.content for fact in found] == [
        "Prefers email; never call, email only",
        "Wants emails in Portuguese",
    ]
    assert found[0].score > found[1].score


async def test_query_syntax_in_a_request_is_searched_as_words(memory):
    await memory.remember("u1", "Prefers email")
    odd = ['"unbalanced', "NEAR(a b", "email OR *", "a AND NOT b", "'; DROP x; --", "-"]
    for query in [*odd, "the and of a", "the email"]:  # stop words only, and with a word
        found = await memory.recall("u1", query)
        assert [f.content for f in found] == (["Prefers email"] if "email" in query else [])


async def test_a_request_with_no_matching_words_still_gets_the_newest_facts(sqlite_memory, clock):
    memory = sqlite_memory
    await memory.remember("u1", "Prefers email")
    clock.advance(10)
    await memory.remember("u1", "Speaks Italian")
    context = await memory.load_context(_request("hello"), token_budget=1000)
    assert [fact.content for fact in context.facts] == ["Speaks Italian", "Prefers email"]


async def test_the_same_source_key_writes_once(memory):
    first = await memory.remember("u1", "Prefers email", source="tool", source_key="run:1")
    again = await memory.remember("u1", "Prefers email", source="tool", source_key="run:1")
    assert again.fact_id == first.fact_id
    assert len(await memory.recall("u1", "email")) == 1
    # The key is per user: another user's fact with the same key is a different fact.
    other = await memory.remember("u2", "Prefers email", source="tool", source_key="run:1")
    assert other.fact_id != first.fact_id


async def test_an_empty_or_overlong_fact_is_refused(sqlite_memory):
    for content in ["", "   ", "x" * 1001]:
        with pytest.raises(ValueError, match="fact"):
            await sqlite_memory.remember("u1", content)


async def test_facts_are_capped_to_their_share_of_the_budget(sqlite_memory):
    memory = sqlite_memory
    for n in range(5):
        await memory.remember("u1", f"Fact number {n} about email: " + "word " * 30)
    context = await memory.load_context(_request("email"), token_budget=400)
    assert 0 < len(context.facts) < 5
    assert sum(len(f.content) for f in context.facts) // 3 <= 100  # 25% of 400


async def test_reserved_tokens_leave_less_room_for_the_context(sqlite_memory):
    memory = sqlite_memory
    await memory.remember("u1", "Prefers email")
    request = _request("email")
    assert (await memory.load_context(request, token_budget=200)).facts
    context = await memory.load_context(request, token_budget=200, reserved_tokens=195)
    assert context.facts == ()
    assert context.token_count == 0
    with pytest.raises(ValueError, match="reserved_tokens"):
        await memory.load_context(request, token_budget=200, reserved_tokens=-1)


async def test_an_expired_fact_is_never_read_and_purge_deletes_it(db_engine, clock):
    memory = SqlMemory(engine=db_engine, clock=clock, fact_ttl_s=30 * DAY_S)
    await memory.start()
    try:
        old = await memory.remember("u1", "Prefers phone calls")
        clock.advance(20 * DAY_S)
        await memory.remember("u1", "Prefers email")
        assert old.expires_at is not None
        clock.advance(11 * DAY_S)  # the first is 31 days old, the second 11
        assert [f.content for f in await memory.recall("u1", "prefers")] == ["Prefers email"]
        context = await memory.load_context(_request("hi"), token_budget=1000)
        assert [f.content for f in context.facts] == ["Prefers email"]
        assert await memory.purge_expired() == 1
        assert await memory.purge_expired() == 0
    finally:
        await memory.close()


async def test_turns_past_their_ttl_are_never_read_and_purge_deletes_them(sqlite_engine, chat):
    clock = FakeClock()
    memory = SqlMemory(engine=sqlite_engine, clock=clock, turn_ttl_s=DAY_S)
    await memory.start()
    try:
        await chat(memory, clock, "s1", ["old question"])
        clock.advance(2 * DAY_S)
        await chat(memory, clock, "s1", ["new question"])
        context = await memory.load_context(_request("next", session="s1"), token_budget=1000)
        assert [t.content for t in context.turns] == ["new question", "answer to new question"]
        assert await memory.purge_expired() == 2
    finally:
        await memory.close()


def test_a_non_positive_ttl_is_refused(sqlite_engine, clock):
    with pytest.raises(ValueError, match="turn_ttl_s"):
        SqlMemory(engine=sqlite_engine, clock=clock, turn_ttl_s=0)
    with pytest.raises(ValueError, match="ttl_s"):
        SqlMemory(engine=sqlite_engine, clock=clock, fact_ttl_s=-1)
