"""`LocalInbox`: a run's messages in process, held until taken, per topic."""

from __future__ import annotations

import asyncio

from bastion.flow.inbox import LocalInbox


async def test_a_message_delivered_before_the_wait_is_kept_for_it():
    inbox = LocalInbox()
    inbox.deliver("approval:a", {"decision": "approved"})
    assert await inbox.receive("approval:a", timeout_s=0) == {"decision": "approved"}


async def test_a_waiting_receiver_is_woken_by_its_topic_only():
    inbox = LocalInbox()
    waiting = asyncio.create_task(inbox.receive("approval:a", timeout_s=30))
    await asyncio.sleep(0)  # noqa: TID251 - let the receiver start waiting
    inbox.deliver("approval:b", {"decision": "denied"})
    inbox.deliver("approval:a", {"decision": "approved"})
    assert await waiting == {"decision": "approved"}
    assert await inbox.receive("approval:b", timeout_s=0) == {"decision": "denied"}


async def test_no_message_within_the_timeout_is_none():
    assert await LocalInbox().receive("approval:a", timeout_s=0.001) is None
