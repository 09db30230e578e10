"""Long-term facts about a user: the `Fact` record and the `FactStore` protocol its backends share.

A fact is one short sentence about one user ("Prefers to be contacted by email"), written by a
tool the planner called (``source="tool"``, keyed on the step's idempotency key so that a replayed
step writes it once) or by the app (``source="app"``). Facts are strictly per user: every method
takes the user's id and no method ever returns another user's fact, whatever the query.

Backends: `bastion.memory.fts.SqlFacts` (the default: SQLite FTS5 ranked by BM25, PostgreSQL
full-text search ranked by ``ts_rank``) and `bastion.memory.embedding.EmbeddingFacts` (vectors
from an `Embedder`, ranked by cosine similarity; an in-memory reference implementation).

Search reads the query as plain words, never as a query language: `query_terms` keeps the words
(letters and digits), lower-cased and de-duplicated, so that a request such as ``"A1001" OR x``
or ``NEAR(`` is searched for its words instead of failing as bad FTS syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

FactSource = Literal["tool", "app"]

#: The longest fact kept, in characters: a fact is a sentence, not a document.
MAX_FACT_CHARS = 1000
#: Words of a query used for search, at most (the first ones).
MAX_QUERY_TERMS = 16

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """One remembered fact about one user."""

    fact_id: int
    user_id: str
    content: str
    source: FactSource
    created_at: datetime
    expires_at: datetime | None = None
    #: Higher is more relevant; 0.0 for facts returned by recency rather than by search.
    score: float = 0.0


def query_terms(query: str) -> list[str]:
    """The distinct words of `query`, lower-cased, in order, at most `MAX_QUERY_TERMS`."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        word = word.strip("_")
        if word and word not in seen:
            seen[word] = None
    return list(seen)[:MAX_QUERY_TERMS]


def check_fact(user_id: str, content: str) -> str:
    """`content` stripped, or `ValueError` saying why it cannot be stored.

    Raises:
        ValueError: the user id or the content is empty, or the content is too long.
    """
    if not user_id.strip():
        raise ValueError("a fact needs a user id")
    text = " ".join(content.split())
    if not text:
        raise ValueError("a fact must not be empty")
    if len(text) > MAX_FACT_CHARS:
        raise ValueError(f"a fact is at most {MAX_FACT_CHARS} characters, got {len(text)}")
    return text


class FactStore(Protocol):
    """Stores and searches long-term facts, per user.

    Contract: no method returns or touches a fact of a user other than the one named; expired
    facts (``expires_at`` at or before now) are never returned, even before `purge_expired`
    deletes them; `remember` with a ``source_key`` already stored for that user returns the stored
    fact and writes nothing.
    """

    async def remember(
        self,
        user_id: str,
        content: str,
        *,
        source: FactSource = "app",
        source_key: str | None = None,
        run_id: str | None = None,
    ) -> Fact:
        """Store a fact about `user_id` (with the store's TTL, if any) and return it.

        Raises:
            ValueError: the fact is empty or too long.
        """
        ...

    async def search(self, user_id: str, query: str, *, limit: int = 5) -> list[Fact]:
        """`user_id`'s facts matching `query`'s words, most relevant first (score set)."""
        ...

    async def recent(self, user_id: str, *, limit: int = 5) -> list[Fact]:
        """`user_id`'s newest facts, newest first."""
        ...

    async def forget_facts(self, user_id: str) -> int:
        """Delete every fact of `user_id` (and its search index entries); return how many."""
        ...

    async def purge_expired(self) -> int:
        """Delete every expired fact; return how many."""
        ...
