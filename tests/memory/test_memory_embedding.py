"""`EmbeddingFacts`: the embedding backend behind the same `FactStore` protocol, per user."""

from __future__ import annotations

import pytest

from bastion.memory import EmbeddingFacts, FactStore, HashingEmbedder, SqlMemory
from bastion.messages import AgentRequest
from bastion.testing.clock import FakeClock


@pytest.fixture
def facts(clock: FakeClock) -> EmbeddingFacts:
    return EmbeddingFacts(embedder=HashingEmbedder(), clock=clock, ttl_s=100.0)


async def test_it_is_a_fact_store_that_ranks_by_similarity(facts: EmbeddingFacts):
    store: FactStore = facts
    await store.remember("u1", "Has a dog called Pixel")
    await store.remember("u1", "Prefers to be contacted by email")
    found = await store.search("u1", "which email should we contact?")
    assert [f.content for f in found] == ["Prefers to be contacted by email"]
    assert 0 < found[0].score <= 1


async def test_another_users_facts_are_never_returned(facts: EmbeddingFacts):
    await facts.remember("u1", "Prefers email")
    assert await facts.search("u2", "Prefers email") == []
    assert await facts.recent("u2") == []
    assert await facts.forget_facts("u2") == 0
    assert await facts.forget_facts("u1") == 1
    assert await facts.search("u1", "email") == []


async def test_source_keys_ttl_and_purge(facts: EmbeddingFacts, clock: FakeClock):
    first = await facts.remember("u1", "Prefers email", source="tool", source_key="r:1")
    assert (await facts.remember("u1", "Prefers email", source_key="r:1")).fact_id == first.fact_id
    clock.advance(101)
    assert await facts.recent("u1") == []
    assert await facts.purge_expired() == 1


async def test_sql_memory_uses_it_for_context_and_forgets_it(
    sqlite_engine, clock: FakeClock, facts: EmbeddingFacts
):
    memory = SqlMemory(engine=sqlite_engine, clock=clock, facts=facts)
    await memory.start()
    try:
        await memory.remember("u1", "Prefers to be contacted by email")
        request = AgentRequest(user_id="u1", session_id="s", message="contact me by email")
        context = await memory.load_context(request, token_budget=500)
        assert [f.content for f in context.facts] == ["Prefers to be contacted by email"]
        report = await memory.forget_user("u1")
        assert report.deleted["facts"] == 1
        assert await memory.recall("u1", "email") == []
    finally:
        await memory.close()


def test_the_hashing_embedder_refuses_tiny_dimensions():
    with pytest.raises(ValueError, match="dimensions"):
        HashingEmbedder(dimensions=4)
