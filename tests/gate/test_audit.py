"""The keyed audit chain in memory: sealing, MACs, and every tamper class `verify` must name."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from bastion.gate.audit import (
    GENESIS,
    InMemoryAuditLog,
    StoredEntry,
    canonical_body,
    entry_mac,
    link,
    seal,
    verify,
)
from bastion.gate.checkpoints import make_checkpoint
from bastion.gate.interface import AuditEntry
from bastion.gate.redact import REDACTED, Redactor

AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
KEY = b"k" * 32


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


async def filled(count: int) -> InMemoryAuditLog:
    log = InMemoryAuditLog(key=KEY)
    for n in range(count):
        await log.append(entry(n))
    return log


def recompute_from(rows: list[StoredEntry], start: int, key: bytes | None) -> None:
    """Re-chain rows[start:] as an intruder would: with plain SHA-256 (no key) or a wrong key."""
    prev = rows[start - 1].mac if start else GENESIS
    for index in range(start, len(rows)):
        message = f"{prev}\n{rows[index].body}".encode()
        mac = (
            hashlib.sha256(message).hexdigest()
            if key is None
            else hmac.digest(key, message, hashlib.sha256).hex()
        )
        rows[index] = rows[index]._replace(prev_mac=prev, mac=mac)
        prev = mac


def edit_body(row: StoredEntry, **fields: Any) -> StoredEntry:
    body = json.loads(row.body)
    body.update(fields)
    return row._replace(body=json.dumps(body, sort_keys=True, separators=(",", ":")))


# -- sealing ---------------------------------------------------------------------------------


def test_seal_makes_time_utc_and_details_plain_json_with_secrets_redacted() -> None:
    local = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    sealed = seal(
        entry(
            at=local,
            reason="r\x00 with sk-abcdefghijklmnopqrstu",
            details={"amount": Decimal("1.5"), "api_key": "k", "tags": {"b", "a"}},
        )
    )
    assert sealed.at == AT
    assert sealed.at.tzinfo is UTC
    assert sealed.details == {"amount": "1.5", "api_key": REDACTED, "tags": ["a", "b"]}
    assert sealed.reason == f"r\ufffd with {REDACTED}"


def test_seal_uses_the_given_redactor_for_declared_fields() -> None:
    sealed = seal(entry(details={"iban": "DE00123"}), Redactor(secret_fields=["IBAN"]))
    assert sealed.details == {"iban": REDACTED}


def test_seal_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="has no timezone"):
        seal(entry(at=datetime(2026, 1, 1)))  # noqa: DTZ001 - naive on purpose


def test_canonical_body_is_compact_column_fields_first_then_sorted() -> None:
    text = canonical_body(7, seal(entry(details={"b": {"z": 1, "y": [2]}, "a": "é"})))
    assert text == (
        '{"seq":7,"at":"2026-03-01T12:30:05.123456+00:00","action":"authorize",'
        '"decision":"allow","principal_id":"c1","run_id":"run_1","tool_name":"get_order",'
        '"details":{"a":"é","b":{"y":[2],"z":1}},"reason":"allowed","stage":"plan"}'
    )
    assert json.loads(text)["details"] == {"a": "é", "b": {"z": 1, "y": [2]}}


def test_canonical_body_escapes_column_values_like_json() -> None:
    text = canonical_body(0, seal(entry(principal_id='c"1\n', run_id=None)))
    assert json.loads(text)["principal_id"] == 'c"1\n'
    assert '"run_id":null' in text


async def test_a_body_not_in_canonical_form_is_found_even_with_a_valid_mac() -> None:
    rows = await (await filled(3)).read_chain()
    body = json.dumps(json.loads(rows[1].body), sort_keys=True, separators=(",", ":"))
    rows[1] = rows[1]._replace(body=body, mac=entry_mac(KEY, rows[1].prev_mac, body))
    recompute_from(rows, 2, KEY)
    report = verify(rows, key=KEY)
    assert report.first_bad == 1
    assert "canonical form" in (report.problem or "")


def test_entry_mac_is_hmac_sha256_of_prev_and_body_under_the_key() -> None:
    body = canonical_body(0, seal(entry()))
    expected = hmac.new(KEY, f"{GENESIS}\n{body}".encode(), hashlib.sha256).hexdigest()
    assert entry_mac(KEY, GENESIS, body) == expected
    assert entry_mac(b"x" * 32, GENESIS, body) != expected
    assert entry_mac(KEY, "1" * 64, body) != expected


async def test_in_memory_log_chains_from_genesis_and_reads_back_its_entries() -> None:
    log = await filled(3)
    rows = await log.read_chain()
    assert [r.seq for r in rows] == [0, 1, 2]
    assert rows[0].prev_mac == GENESIS
    assert [r.prev_mac for r in rows[1:]] == [r.mac for r in rows[:-1]]
    assert log.entries == [seal(entry(n)) for n in range(3)]
    assert verify(rows, key=KEY).ok


async def test_in_memory_log_with_no_key_draws_a_random_one() -> None:
    one, two = InMemoryAuditLog(), InMemoryAuditLog()
    assert len(one.key) == 32
    assert one.key != two.key


async def test_link_columns_repeat_the_sealed_fields() -> None:
    row = link(KEY, seq=3, prev_mac=GENESIS, entry=entry(run_id="r9", tool_name=None))
    assert (row.seq, row.action, row.decision, row.principal_id, row.run_id, row.tool_name) == (
        3,
        "authorize",
        "allow",
        "c1",
        "r9",
        None,
    )
    assert row.entry() == seal(entry(run_id="r9", tool_name=None))


# -- verify: every tamper class names the first bad index -------------------------------------


def test_an_empty_log_is_intact() -> None:
    report = verify([], key=KEY)
    assert report.ok
    assert report.entries == 0


async def test_a_byte_edited_in_a_body_is_found_at_that_entry() -> None:
    rows = await (await filled(6)).read_chain()
    rows[3] = rows[3]._replace(body=rows[3].body.replace('"allow"', '"alloW"'))
    report = verify(rows, key=KEY)
    assert report.first_bad == 3
    assert "MAC does not match" in (report.problem or "")


async def test_an_edited_filter_column_is_found_at_that_entry() -> None:
    rows = await (await filled(6)).read_chain()
    rows[4] = rows[4]._replace(decision="deny")
    report = verify(rows, key=KEY)
    assert report.first_bad == 4
    assert "decision column" in (report.problem or "")


@pytest.mark.parametrize("column", ["principal_id", "run_id", "tool_name", "action"])
async def test_every_filter_column_is_checked_against_the_body(column: str) -> None:
    rows = await (await filled(3)).read_chain()
    changes: dict[str, Any] = {column: "someone_else"}
    rows[1] = rows[1]._replace(**changes)
    assert verify(rows, key=KEY).first_bad == 1


async def test_an_edited_time_column_is_found() -> None:
    rows = await (await filled(3)).read_chain()
    rows[2] = rows[2]._replace(at=rows[2].at - timedelta(hours=1))
    assert verify(rows, key=KEY).first_bad == 2


async def test_a_deleted_entry_is_found_where_it_was() -> None:
    rows = await (await filled(6)).read_chain()
    del rows[2]
    report = verify(rows, key=KEY)
    assert report.first_bad == 2
    assert "deleted, inserted or reordered" in (report.problem or "")


async def test_a_deleted_entry_with_the_rest_renumbered_is_found_where_it_was() -> None:
    rows = await (await filled(6)).read_chain()
    del rows[2]
    rows = [r._replace(seq=i) for i, r in enumerate(rows)]
    report = verify(rows, key=KEY)
    assert report.first_bad == 2
    assert "does not link" in (report.problem or "")


async def test_two_swapped_entries_are_found_at_the_first() -> None:
    rows = await (await filled(6)).read_chain()
    rows[1], rows[2] = rows[2], rows[1]
    assert verify(rows, key=KEY).first_bad == 1


async def test_two_entries_swapped_keeping_their_positions_are_found_at_the_first() -> None:
    rows = await (await filled(6)).read_chain()
    first, second = rows[2], rows[4]
    rows[2] = second._replace(seq=2)
    rows[4] = first._replace(seq=4)
    assert verify(rows, key=KEY).first_bad == 2


async def test_a_forged_entry_inserted_is_found_at_its_position() -> None:
    rows = await (await filled(6)).read_chain()
    forged_body = canonical_body(3, seal(entry(99, decision="allow", reason="approved")))
    forged = rows[3]._replace(body=forged_body, prev_mac=rows[2].mac, mac="f" * 64)
    rows = [*rows[:3], forged, *(r._replace(seq=r.seq + 1) for r in rows[3:])]
    report = verify(rows, key=KEY)
    assert report.first_bad == 3
    assert "MAC does not match" in (report.problem or "")


async def test_a_forged_entry_appended_at_the_end_is_found() -> None:
    rows = await (await filled(4)).read_chain()
    # Well-formed and linked, but chained with a guessed key.
    rows.append(link(b"guess" * 7, seq=4, prev_mac=rows[-1].mac, entry=entry(4)))
    assert verify(rows, key=KEY).first_bad == 4


@pytest.mark.parametrize("recompute_key", [None, b"w" * 32], ids=["sha256", "wrong-key"])
async def test_a_chain_recomputed_without_the_key_is_found_at_the_first_recomputed_entry(
    recompute_key: bytes | None,
) -> None:
    rows = await (await filled(8)).read_chain()
    rows[5] = edit_body(rows[5], decision="allow", reason="nothing to see")
    recompute_from(rows, 5, recompute_key)
    report = verify(rows, key=KEY)
    assert report.first_bad == 5
    assert "without the audit key" in (report.problem or "")


async def test_a_whole_chain_recomputed_without_the_key_fails_at_entry_0_with_a_hint() -> None:
    rows = await (await filled(4)).read_chain()
    recompute_from(rows, 0, None)
    report = verify(rows, key=KEY)
    assert report.first_bad == 0
    assert "gate secret" in (report.problem or "")


async def test_the_wrong_key_fails_at_entry_0() -> None:
    rows = await (await filled(3)).read_chain()
    assert verify(rows, key=b"z" * 32).first_bad == 0


async def test_a_body_that_is_not_json_is_found() -> None:
    rows = await (await filled(3)).read_chain()
    body = "not json"
    rows[1] = rows[1]._replace(body=body, mac=entry_mac(KEY, rows[1].prev_mac, body))
    recompute_from(rows, 2, KEY)
    report = verify(rows, key=KEY)
    assert report.first_bad == 1
    assert "not JSON" in (report.problem or "")


# -- verify against checkpoints -------------------------------------------------------------


async def checkpointed(count: int, *sizes: int) -> tuple[list[StoredEntry], list[Any]]:
    rows = await (await filled(count)).read_chain()
    checkpoints = [
        make_checkpoint(KEY, size=s, head=rows[s - 1].mac, at=AT + timedelta(seconds=s))
        for s in sizes
    ]
    return rows, checkpoints


async def test_checkpoints_that_match_are_counted() -> None:
    rows, checkpoints = await checkpointed(10, 5, 10)
    report = verify(rows, key=KEY, checkpoints=checkpoints)
    assert report.ok
    assert report.checkpoints_matched == 2


async def test_a_truncated_tail_is_invisible_to_the_chain_but_not_to_a_checkpoint() -> None:
    rows, checkpoints = await checkpointed(10, 5, 10)
    cut = rows[:7]
    assert verify(cut, key=KEY).ok  # a prefix of a valid chain is a valid chain
    report = verify(cut, key=KEY, checkpoints=checkpoints)
    assert report.first_bad == 7
    assert report.checkpoints_matched == 1
    assert "entries 7 to 9 are missing" in (report.problem or "")


async def test_an_old_copy_restored_is_found_at_its_end_against_a_checkpoint() -> None:
    rows, _ = await checkpointed(10)
    old_copy = list(rows[:6])
    checkpoints = [make_checkpoint(KEY, size=10, head=rows[9].mac, at=AT + timedelta(minutes=1))]
    report = verify(old_copy, key=KEY, checkpoints=checkpoints)
    assert report.first_bad == 6


async def test_an_old_copy_restored_then_appended_to_is_found_where_it_forks() -> None:
    log = await filled(10)
    taken_at = AT + timedelta(minutes=1)
    checkpoint = make_checkpoint(KEY, size=10, head=log.rows[9].mac, at=taken_at)
    log.rows = log.rows[:6]  # the older copy, restored
    for n in range(6):  # the system goes on appending, with the key, after the checkpoint
        await log.append(entry(n, at=taken_at + timedelta(seconds=n + 1)))
    rows = await log.read_chain()
    assert verify(rows, key=KEY).ok  # the chain alone cannot tell
    report = verify(rows, key=KEY, checkpoints=[checkpoint])
    assert report.first_bad == 6
    assert "older copy" in (report.problem or "")


async def test_a_log_rewritten_by_a_key_holder_is_pinned_after_the_last_good_checkpoint():
    rows, checkpoints = await checkpointed(10, 4, 10)
    # An insider with the key rewrites entries 4 to 9, back-dated: the chain verifies, the entries'
    # times tell nothing, only the checkpoint of size 10 disagrees.
    insider = InMemoryAuditLog(key=KEY)
    insider.rows = list(rows[:4])
    for n in range(4, 10):
        await insider.append(entry(n, reason="rewritten"))
    rewritten = await insider.read_chain()
    assert verify(rewritten, key=KEY).ok
    report = verify(rewritten, key=KEY, checkpoints=checkpoints)
    assert report.first_bad == 4
    assert report.checkpoints_matched == 1
    assert "no earlier checkpoint covers" in (report.problem or "")


async def test_a_chain_error_before_a_checkpoint_wins() -> None:
    rows, checkpoints = await checkpointed(10, 10)
    rows[2] = rows[2]._replace(decision="deny")
    report = verify(rows[:8], key=KEY, checkpoints=checkpoints)
    assert report.first_bad == 2
