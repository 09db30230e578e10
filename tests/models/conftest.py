"""Fixtures for the model tests: a live fake OpenAI server and a model pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bastion.models.openai_compat import OpenAIChatModel
from bastion.testing.clock import FakeClock
from bastion.testing.fake_openai import FakeOpenAIServer


class TickingClock(FakeClock):
    """A fake clock that moves 0.25 s every time it is read, so latency is measurable."""

    def monotonic(self) -> float:
        self.advance(0.25)
        return super().monotonic()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's OpenAI environment out of tests that rely on the SDK's defaults."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def gpt(fake_openai: FakeOpenAIServer) -> AsyncIterator[OpenAIChatModel]:
    async with OpenAIChatModel(
        model="gpt-test",
        base_url=fake_openai.base_url,
        api_key="sk-test",
        clock=TickingClock(),
        timeout_s=5,
    ) as model:
        yield model
