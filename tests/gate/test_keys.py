"""SqlKeyStore on SQLite and PostgreSQL: keys shown once, stored as HMACs, revoked, expired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bastion.errors import NotAuthenticated
from bastion.gate.keys import KeyStatus, SqlKeyStore, key_id_of
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate
from bastion.storage.tables import api_keys

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HMAC_KEY = b"h" * 32


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlKeyStore]:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        yield SqlKeyStore(engine=engine, key=HMAC_KEY)
    finally:
        await engine.dispose()


async def stored_rows(store: SqlKeyStore) -> list[dict]:
    async with store._engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(sa.select(api_keys))).mappings()]


async def test_a_created_key_authenticates_as_its_principal(store):
    issued = await store.create("svc", name="ci", now=NOW, expires_at=NOW + timedelta(days=1))
    assert issued.key.startswith(f"bst_{issued.record.key_id}_")
    assert len(issued.key) == 4 + 12 + 1 + 43
    record = await store.authenticate(issued.key, now=NOW)
    assert record == issued.record
    assert record.principal_id == "svc"
    assert record.status(NOW) is KeyStatus.ACTIVE


async def test_the_key_itself_is_never_stored_nor_shown(store):
    issued = await store.create("svc", name="ci", now=NOW, expires_at=None)
    secret_part = issued.key.rsplit("_", 1)[-1]
    [row] = await stored_rows(store)
    assert issued.key not in str(row)
    assert secret_part not in str(row)
    assert len(row["digest"]) == 64
    assert issued.key not in repr(issued)
    assert issued.record.label == f"bst_{issued.record.key_id}_…"


async def test_keys_are_unique(store):
    keys = {(await store.create("svc", name="", now=NOW, expires_at=None)).key for _ in range(5)}
    assert len(keys) == 5


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # one character of the secret
        lambda k: k[:4] + "0" * 12 + k[16:],  # another key id
        lambda k: k.upper(),
    ],
    ids=["secret-changed", "id-changed", "case-changed"],
)
async def test_a_wrong_key_is_not_recognised(store, mangle):
    issued = await store.create("svc", name="", now=NOW, expires_at=None)
    with pytest.raises(NotAuthenticated) as caught:
        await store.authenticate(mangle(issued.key), now=NOW)
    assert "not recognised" in str(caught.value) or "malformed" in str(caught.value)


@pytest.mark.parametrize("text", ["", "hunter2", "bst_abc", "sk-" + "a" * 40, "bst_" + "g" * 12])
async def test_a_malformed_key_says_what_a_key_looks_like(store, text):
    with pytest.raises(NotAuthenticated, match="malformed: Bastion keys look like bst_"):
        await store.authenticate(text, now=NOW)


async def test_a_key_of_another_server_secret_is_not_recognised(store):
    issued = await store.create("svc", name="", now=NOW, expires_at=None)
    other = SqlKeyStore(engine=store._engine, key=b"o" * 32)
    with pytest.raises(NotAuthenticated, match="not recognised"):
        await other.authenticate(issued.key, now=NOW)


async def test_an_expired_key_fails_with_a_clear_error(store):
    expires = NOW + timedelta(hours=1)
    issued = await store.create("svc", name="", now=NOW, expires_at=expires)
    assert await store.authenticate(issued.key, now=expires - timedelta(seconds=1))
    with pytest.raises(NotAuthenticated) as caught:
        await store.authenticate(issued.key, now=expires)
    message = str(caught.value)
    assert f"API key bst_{issued.record.key_id}_… expired at 2026-03-01T13:00:00+00:00" in message
    assert "bastion keys create" in message
    assert caught.value.user_message == "Your API key has expired. Ask for a new one."


async def test_a_revoked_key_fails_with_a_clear_error(store):
    issued = await store.create("svc", name="", now=NOW, expires_at=None)
    revoked = await store.revoke(issued.record.key_id, now=NOW + timedelta(minutes=5))
    assert revoked.status(NOW) is KeyStatus.REVOKED
    with pytest.raises(NotAuthenticated) as caught:
        await store.authenticate(issued.key, now=NOW + timedelta(minutes=6))
    assert f"bst_{issued.record.key_id}_… was revoked at 2026-03-01T12:05:00+00:00" in str(
        caught.value
    )
    assert caught.value.user_message == "Your API key has been revoked. Ask for a new one."


async def test_revoked_wins_over_expired(store):
    issued = await store.create("svc", name="", now=NOW, expires_at=NOW + timedelta(seconds=1))
    await store.revoke(issued.record.key_id, now=NOW)
    with pytest.raises(NotAuthenticated, match="was revoked"):
        await store.authenticate(issued.key, now=NOW + timedelta(days=1))


async def test_revoking_twice_keeps_the_first_time(store):
    issued = await store.create("svc", name="", now=NOW, expires_at=None)
    first = await store.revoke(issued.record.key_id, now=NOW)
    second = await store.revoke(issued.record.key_id, now=NOW + timedelta(days=1))
    assert first.revoked_at == second.revoked_at == NOW


async def test_revoking_an_unknown_key_id_raises_lookup_error(store):
    with pytest.raises(LookupError, match="no API key has the id 'aaaaaaaaaaaa'"):
        await store.revoke("aaaaaaaaaaaa", now=NOW)


async def test_only_the_holder_of_the_real_key_learns_it_was_revoked(store):
    issued = await store.create("svc", name="", now=NOW, expires_at=None)
    await store.revoke(issued.record.key_id, now=NOW)
    forged = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    with pytest.raises(NotAuthenticated, match="not recognised"):
        await store.authenticate(forged, now=NOW)


async def test_list_shows_records_by_principal_oldest_first(store):
    a = await store.create("a", name="one", now=NOW, expires_at=None)
    b = await store.create("b", name="two", now=NOW + timedelta(seconds=1), expires_at=None)
    assert [k.key_id for k in await store.list()] == [a.record.key_id, b.record.key_id]
    assert [k.name for k in await store.list(principal_id="b")] == ["two"]


async def test_owner_names_the_principal_whatever_the_status(store):
    issued = await store.create("svc", name="", now=NOW, expires_at=NOW + timedelta(seconds=1))
    await store.revoke(issued.record.key_id, now=NOW)
    assert await store.owner(issued.key) == "svc"
    assert await store.owner(issued.key[:-1] + "?") is None
    assert await store.owner("junk") is None


async def test_create_refuses_a_past_expiry_and_an_empty_principal(store):
    with pytest.raises(ValueError, match="expire in the past"):
        await store.create("svc", name="", now=NOW, expires_at=NOW)
    with pytest.raises(ValueError, match="principal id"):
        await store.create(" ", name="", now=NOW, expires_at=None)


def test_key_id_of_reads_whole_keys_and_bare_ids():
    key = "bst_0123456789ab_" + "x" * 43
    assert key_id_of(key) == "0123456789ab"
    assert key_id_of("0123456789ab") == "0123456789ab"
    assert key_id_of("bst_0123456789ab_…") == "0123456789ab"
    assert key_id_of("nope") is None
