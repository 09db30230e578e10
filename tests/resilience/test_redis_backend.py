"""The Redis backend against the real Redis on 127.0.0.1:6379 (each test under its own key prefix).

Skipped, saying why, when Redis cannot be reached; ``BASTION_REQUIRE_REDIS=1`` (as CI sets) makes
that a failure. Redis going down is simulated without touching the shared server: a client
pointed at a closed port, or a TCP proxy in front of Redis that the test shuts mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bastion.resilience.breaker import BreakerBoard, BreakerConfig, BreakerState
from bastion.resilience.rate_limit import Charge, Limit
from bastion.resilience.redis_backend import RedisBreakerShare, RedisLimiter, connect
from bastion.testing.clock import FakeClock

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_WORKER_TIMEOUT_S = 60.0


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = connect(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        if os.environ.get("BASTION_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required (BASTION_REQUIRE_REDIS=1): {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    name = f"bastion-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = [key async for key in redis_client.scan_iter(match=f"{name}:*")]
    if keys:
        await redis_client.delete(*keys)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


async def test_gcra_in_redis_admits_the_burst_then_refuses_with_the_wait(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    limiter = RedisLimiter(redis_client, clock=FakeClock(), prefix=prefix)
    limit = Limit(rate=60, burst=3)  # one a second
    request = [Charge(key="user:a", limit=limit)]

    results = [(await limiter.acquire(request)).allowed for _ in range(4)]
    refused = await limiter.acquire(request)

    assert results == [True, True, True, False]
    assert not refused.allowed
    assert refused.key == "user:a"
    assert 0.9 <= refused.retry_after_s <= 1.0
    assert (await limiter.acquire([Charge(key="user:b", limit=limit)])).allowed
    assert await redis_client.pttl(f"{prefix}:rl:user:a") > 0  # state expires on its own


async def test_redis_charges_are_all_or_nothing(redis_client: aioredis.Redis, prefix: str) -> None:
    limiter = RedisLimiter(redis_client, clock=FakeClock(), prefix=prefix)
    tight, loose = Limit(rate=1, burst=1), Limit(rate=1, burst=2)
    assert (await limiter.acquire([Charge(key="app", limit=tight)])).allowed

    refused = await limiter.acquire([Charge(key="u", limit=loose), Charge(key="app", limit=tight)])

    assert refused.key == "app"
    assert [(await limiter.acquire([Charge(key="u", limit=loose)])).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]


_WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from bastion.resilience.rate_limit import Charge, Limit
    from bastion.resilience.redis_backend import RedisLimiter, connect
    from bastion.testing.clock import FakeClock

    async def main(url, prefix, n):
        client = connect(url)
        deadline = time.perf_counter() + 30
        while not await client.exists(prefix + ":go"):
            if time.perf_counter() > deadline:
                raise SystemExit("no go signal")
            await asyncio.sleep(0.005)
        limiter = RedisLimiter(client, clock=FakeClock(), prefix=prefix)
        request = [Charge(key="shared", limit=Limit(rate=1, burst=40))]
        admitted = 0
        for _ in range(n):
            admitted += (await limiter.acquire(request)).allowed
        await client.aclose()
        print(admitted)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_two_worker_processes_hammering_one_key_never_admit_more_than_the_limit(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            REDIS_URL,
            prefix,
            "150",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    started = time.perf_counter()
    await redis_client.set(f"{prefix}:go", "1")
    outputs = await asyncio.wait_for(
        asyncio.gather(*(w.communicate() for w in workers)), _WORKER_TIMEOUT_S
    )
    elapsed = time.perf_counter() - started

    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    admitted = [int(out.decode().strip()) for out, _ in outputs]
    # b + r·Δ, with r = 1 a minute: 40 plus one for each started minute.
    assert 40 <= sum(admitted) <= 40 + int(elapsed / 60) + 1


async def test_redis_down_from_the_start_falls_back_to_in_process_limits_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = connect(f"redis://127.0.0.1:{closed_port()}/0")
    clock = FakeClock()
    limiter = RedisLimiter(client, clock=clock, prefix="x", retry_s=5.0)
    request = [Charge(key="user:a", limit=Limit(rate=60, burst=2))]

    with caplog.at_level(logging.WARNING):
        results = [(await limiter.acquire(request)).allowed for _ in range(3)]

    assert results == [True, True, False]  # limited, never unlimited
    assert limiter.degraded
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1
    await limiter.aclose()


class Proxy:
    """A TCP proxy to Redis that the test can kill, as if Redis died."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        async with asyncio.TaskGroup() as group:
            group.create_task(pipe(reader, up_writer))
            group.create_task(pipe(up_reader, writer))

    async def kill(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def test_redis_killed_mid_test_degrades_to_in_process_limits_then_recovers(
    redis_client: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = Proxy(port)
    proxied = connect(f"redis://127.0.0.1:{await proxy.start()}/0")
    clock = FakeClock()
    limiter = RedisLimiter(proxied, clock=clock, prefix=prefix, retry_s=5.0)
    request = [Charge(key="user:a", limit=Limit(rate=60, burst=2))]
    assert (await limiter.acquire(request)).allowed
    assert not limiter.degraded

    await proxy.kill()
    with caplog.at_level(logging.WARNING):
        during = [(await limiter.acquire(request)).allowed for _ in range(3)]

    assert during == [True, True, False]  # in-process limits, not none
    assert limiter.degraded
    assert any("Redis is unreachable" in r.getMessage() for r in caplog.records)
    # Back up (a fresh client on the real server): after retry_s, shared limits again.
    limiter._client = redis_client
    limiter._script = redis_client.register_script(limiter._script.script)
    clock.advance(5.0)
    assert (await limiter.acquire(request)).allowed  # Redis still holds one unit of two
    assert not limiter.degraded
    assert not (await limiter.acquire(request)).allowed
    await proxied.aclose()


async def test_an_opening_is_shared_with_other_workers_and_listed_for_status(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    config = BreakerConfig.consecutive(1, open_wait_s=30.0)
    worker_a = BreakerBoard(
        clock=FakeClock(), config=config, share=RedisBreakerShare(redis_client, prefix=prefix)
    )
    worker_b = BreakerBoard(
        clock=FakeClock(), config=config, share=RedisBreakerShare(redis_client, prefix=prefix)
    )
    breaker = await worker_a.sync("model:openai:m")
    breaker.check()
    breaker.record_failure()
    await worker_a.flush()

    adopted = await worker_b.sync("model:openai:m")

    assert adopted.state is BreakerState.OPEN
    assert 29.0 < adopted.retry_at - FakeClock().monotonic() <= 30.0
    states = await RedisBreakerShare(redis_client, prefix=prefix).states()
    assert states["model:openai:m"]["state"] == "open"
    # Worker B adopted the opening: it did not publish it again, nor would close it for all.
    assert list(states) == ["model:openai:m"]


async def test_breaker_share_with_redis_down_keeps_breakers_local(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = connect(f"redis://127.0.0.1:{closed_port()}/0")
    share = RedisBreakerShare(client, prefix="x")
    board = BreakerBoard(
        clock=FakeClock(), config=BreakerConfig.consecutive(1, open_wait_s=5.0), share=share
    )

    with caplog.at_level(logging.WARNING):
        breaker = await board.sync("tool:t")
        breaker.check()
        breaker.record_failure()
        await board.flush()

    assert breaker.state is BreakerState.OPEN
    assert "breakers stay local" in caplog.text
    await client.aclose()


async def test_a_worker_reuses_what_redis_said_for_refresh_s(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    share = RedisBreakerShare(redis_client, prefix=prefix, clock=clock, refresh_s=1.0)
    await RedisBreakerShare(redis_client, prefix=prefix).publish(
        "tool:t", BreakerState.OPEN, open_for_s=30, at="x"
    )
    first = await share.open_for("tool:t")
    assert first is not None
    await redis_client.delete(f"{prefix}:breaker:tool:t")  # closed elsewhere meanwhile
    clock.advance(0.5)

    assert await share.open_for("tool:t") == pytest.approx(first - 0.5)  # not asked again
    clock.advance(0.5)
    assert await share.open_for("tool:t") is None  # asked again: closed
