"""Facts searched by meaning: an `Embedder` protocol and `EmbeddingFacts`, an in-memory reference.

The optional embedding backend behind the same `FactStore` protocol as the full-text one. What
ships here is the reference: facts held in process (lost at exit; one process only) and ranked by
the cosine similarity of their vectors to the query's. A production backend keeps the vectors in
the database (pgvector, sqlite-vec) behind the same protocol; none is bundled, to keep the core
install free of a vector extension and of model weights.

`HashingEmbedder` is a dependency-free embedder (the hashing trick over words and their
prefixes): deterministic and good enough for tests and a demo; a real deployment passes an
`Embedder` that calls an embedding model.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Protocol

from bastion.clock import Clock
from bastion.memory.facts import Fact, FactSource, FactStore, check_fact, query_terms

Vector = list[float]


class Embedder(Protocol):
    """Turns texts into vectors of one fixed dimension; similar texts give close vectors."""

    async def embed(self, texts: Sequence[str]) -> list[Vector]: ...


class HashingEmbedder(Embedder):
    """Bag of words and 4-letter prefixes, hashed into `dimensions` buckets, L2-normalised.

    Prefixes make "emails" and "email" share a bucket, as stemming would.
    """

    def __init__(self, *, dimensions: int = 256) -> None:
        if dimensions < 8:
            raise ValueError(f"dimensions must be at least 8, got {dimensions}")
        self._dimensions = dimensions

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> Vector:
        vector = [0.0] * self._dimensions
        for word in query_terms(text) if text else []:
            for feature in {word, word[:4]}:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                vector[int.from_bytes(digest, "big") % self._dimensions] += 1.0
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector


class EmbeddingFacts(FactStore):
    """Facts in process, ranked by cosine similarity of `embedder` vectors; per user.

    Args:
        embedder: makes the vectors of facts and queries.
        clock: stamps facts and decides what has expired.
        ttl_s: how long a new fact is kept; None keeps it until deleted.
        min_score: matches scoring below this are not returned (0 < min_score <= 1).
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        clock: Clock,
        ttl_s: float | None = None,
        min_score: float = 0.1,
    ) -> None:
        self._embedder = embedder
        self._clock = clock
        self._ttl_s = ttl_s
        self._min_score = min_score
        self._facts: dict[str, list[tuple[Fact, Vector, str | None]]] = {}
        self._next_id = 1
        self._lock = asyncio.Lock()

    async def remember(
        self,
        user_id: str,
        content: str,
        *,
        source: FactSource = "app",
        source_key: str | None = None,
        run_id: str | None = None,
    ) -> Fact:
        text = check_fact(user_id, content)
        [vector] = await self._embedder.embed([text])
        async with self._lock:
            mine = self._facts.setdefault(user_id, [])
            if source_key is not None:
                for fact, _, key in mine:
                    if key == source_key:
                        return fact
            now = self._clock.now()
            fact = Fact(
                fact_id=self._next_id,
                user_id=user_id,
                content=text,
                source=source,
                created_at=now,
                expires_at=None if self._ttl_s is None else now + timedelta(seconds=self._ttl_s),
            )
            self._next_id += 1
            mine.append((fact, vector, source_key))
            return fact

    async def search(self, user_id: str, query: str, *, limit: int = 5) -> list[Fact]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not query_terms(query):
            return []
        [wanted] = await self._embedder.embed([query])
        scored = [
            replace(fact, score=_cosine(wanted, vector)) for fact, vector, _ in self._live(user_id)
        ]
        scored = [fact for fact in scored if fact.score >= self._min_score]
        scored.sort(key=lambda fact: (-fact.score, -fact.fact_id))
        return scored[:limit]

    async def recent(self, user_id: str, *, limit: int = 5) -> list[Fact]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        facts = [fact for fact, _, _ in self._live(user_id)]
        facts.sort(key=lambda fact: (fact.created_at, fact.fact_id), reverse=True)
        return facts[:limit]

    async def forget_facts(self, user_id: str) -> int:
        async with self._lock:
            return len(self._facts.pop(user_id, []))

    async def purge_expired(self) -> int:
        now = self._clock.now()
        removed = 0
        async with self._lock:
            for user_id, entries in list(self._facts.items()):
                kept = [e for e in entries if e[0].expires_at is None or e[0].expires_at > now]
                removed += len(entries) - len(kept)
                self._facts[user_id] = kept
        return removed

    def _live(self, user_id: str) -> list[tuple[Fact, Vector, str | None]]:
        now = self._clock.now()
        return [
            entry
            for entry in self._facts.get(user_id, [])
            if entry[0].expires_at is None or entry[0].expires_at > now
        ]


def _cosine(a: Vector, b: Vector) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0
