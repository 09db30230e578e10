from __future__ import annotations

from datetime import timedelta

from bastion.gate.audit import InMemoryAuditLog
from bastion.resilience.audit import audit_sink
from bastion.resilience.breaker import BreakerBoard, BreakerConfig
from bastion.testing.clock import FakeClock


async def test_each_breaker_change_is_an_audit_entry() -> None:
    clock = FakeClock()
    audit = InMemoryAuditLog()
    board = BreakerBoard(
        clock=clock, config=BreakerConfig.consecutive(1, open_wait_s=5.0), sink=audit_sink(audit)
    )
    breaker = await board.sync("tool:lookup")
    breaker.check()
    breaker.record_failure()
    await board.flush()
    clock.advance(5.0)
    breaker = await board.sync("tool:lookup")
    breaker.check()
    breaker.record_success()
    await board.flush()

    entries = audit.entries
    assert [(e.action, e.decision, e.details["to"]) for e in entries] == [
        ("breaker_change", "deny", "open"),
        ("breaker_change", "allow", "half_open"),
        ("breaker_change", "allow", "closed"),
    ]
    assert entries[0].reason == "circuit breaker tool:lookup: closed -> open"
    assert entries[0].at == clock.now() - timedelta(seconds=5)
