from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from bastion.gate.audit import (
    GENESIS_HASH,
    REDACTED,
    ChainedEntry,
    InMemoryAuditLog,
    canonical_json,
    chain,
    entry_hash,
    looks_secret,
    redact,
    seal,
    verify,
)
from bastion.gate.interface import AuditEntry

AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


def entry(n: int = 0, **changes: Any) -> AuditEntry:
    base = AuditEntry(
        at=AT + timedelta(seconds=n),
        action="authorize",
        decision="allow",
        principal_id="c1",
        reason="allowed",
        run_id="run_1",
        tool_name="get_order",
        stage="plan",
        details={"args": {"order_id": f"A{n}"}},
    )
    return replace(base, **changes)


async def filled_log(count: int) -> InMemoryAuditLog:
    log = InMemoryAuditLog()
    for n in range(count):
        await log.append(entry(n))
    return log


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "new_password",
        "passwd",
        "token",
        "access_token",
        "refreshToken",
        "secret",
        "client_secret",
        "clientSecret",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "APIKey",
        "authorization",
        "Authorization",
        "card_number",
        "cardNumber",
        "credit_card",
        "cvv",
        "private_key",
        "Cookie",
    ],
)
def test_secret_looking_keys(key: str) -> None:
    assert looks_secret(key)


@pytest.mark.parametrize(
    "key",
    ["order_id", "max_tokens", "amount", "secretary", "key", "api", "card", "number", "reason"],
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not looks_secret(key)


def test_redact_walks_nested_values_and_makes_plain_json() -> None:
    value = {
        "user": {"name": "Ada", "password": "x", "cards": [{"card_number": "4111"}]},
        "amount": Decimal("12.50"),
        "when": datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
        "naive": datetime(2026, 1, 1, 12, 0),  # noqa: DTZ001 - naive on purpose
        "tags": {"b", "a"},
        "pair": (1, 2.5),
        "token": {"nested": "hidden as a whole"},
        "other": object,
        "big": 1e20,
        "nan": float("nan"),
        "nul\x00key": "a\x00b",
        "flag": True,
        "none": None,
    }
    assert redact(value) == {
        "user": {"name": "Ada", "password": REDACTED, "cards": [{"card_number": REDACTED}]},
        "amount": "12.50",
        "when": "2026-01-01T12:00:00.000000Z",
        "naive": "2026-01-01T12:00:00",
        "tags": ["a", "b"],
        "pair": [1, 2.5],
        "token": REDACTED,
        "other": str(object),
        "big": 100000000000000000000,
        "nan": "nan",
        "nul\ufffdkey": "a\ufffdb",
        "flag": True,
        "none": None,
    }


# -- sealing and hashing ---------------------------------------------------------------------


def test_seal_makes_time_utc_and_details_json_and_redacted() -> None:
    local = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    sealed = seal(
        entry(at=local, reason="r\x00", details={"amount": Decimal("1.5"), "api_key": "k"})
    )
    assert sealed.at == AT
    assert sealed.at.tzinfo is UTC
    assert sealed.details == {"amount": "1.5", "api_key": REDACTED}
    assert sealed.reason == "r\ufffd"


def test_seal_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="has no timezone"):
        seal(entry(at=datetime(2026, 1, 1)))  # noqa: DTZ001 - naive on purpose


def test_canonical_json_is_sorted_compact_with_utc_microseconds() -> None:
    text = canonical_json(entry(details={"b": 1, "a": "é"}))
    assert text == (
        '{"action":"authorize","at":"2026-03-01T12:30:05.123456Z","decision":"allow",'
        '"details":{"a":"é","b":1},"principal_id":"c1","reason":"allowed","run_id":"run_1",'
        '"stage":"plan","tool_name":"get_order"}'
    )


def test_entry_hash_is_sha256_of_prev_hash_and_canonical_json() -> None:
    item = entry()
    expected = hashlib.sha256((GENESIS_HASH + canonical_json(item)).encode()).hexdigest()
    assert entry_hash(GENESIS_HASH, item) == expected
    assert entry_hash("1" * 64, item) != expected


async def test_in_memory_log_chains_from_genesis() -> None:
    log = await filled_log(3)
    items = await log.read_chain()
    assert [i.entry for i in items] == log.entries == [seal(entry(n)) for n in range(3)]
    assert items[0].prev_hash == GENESIS_HASH
    assert items[1].prev_hash == items[0].hash
    assert items[2].prev_hash == items[1].hash
    assert len({i.hash for i in items}) == 3
    assert verify(items) is None


async def test_in_memory_log_seals_what_it_keeps() -> None:
    log = InMemoryAuditLog()
    await log.append(entry(details={"token": "abc"}))
    assert log.entries[0].details == {"token": REDACTED}


# -- verify ----------------------------------------------------------------------------------


def test_verify_empty_chain_is_intact() -> None:
    assert verify([]) is None


async def test_verify_finds_an_edited_entry() -> None:
    items = await (await filled_log(5)).read_chain()
    items[2] = replace(items[2], entry=replace(items[2].entry, decision="deny"))
    assert verify(items) == 2


async def test_verify_finds_edited_details() -> None:
    items = await (await filled_log(5)).read_chain()
    items[3] = replace(items[3], entry=replace(items[3].entry, details={"args": {}}))
    assert verify(items) == 3


async def test_verify_finds_an_edited_entry_whose_hash_was_recomputed() -> None:
    items = await (await filled_log(5)).read_chain()
    forged = replace(items[1].entry, reason="nothing to see")
    items[1] = ChainedEntry(
        entry=forged, prev_hash=items[1].prev_hash, hash=entry_hash(items[1].prev_hash, forged)
    )
    # The forged entry is self-consistent; the next one no longer links to it.
    assert verify(items) == 2


async def test_verify_finds_a_deleted_entry() -> None:
    items = await (await filled_log(5)).read_chain()
    del items[2]
    assert verify(items) == 2


async def test_verify_finds_reordered_entries() -> None:
    items = await (await filled_log(4)).read_chain()
    items[1], items[2] = items[2], items[1]
    assert verify(items) == 1


def test_verify_finds_a_chain_not_starting_at_genesis() -> None:
    first = chain(GENESIS_HASH, entry(0))
    second = chain(first.hash, entry(1))
    assert verify([second]) == 0
