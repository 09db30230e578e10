"""`audit_sink`: breaker state changes as entries of the gate's audit log.

A breaker opening switches a dependency off for every user; that is a decision operators must be
able to find afterwards, next to the gate's own. Each change becomes one entry, action
``breaker_change``: ``deny`` when the breaker opens (calls are refused), ``allow`` otherwise.
"""

from __future__ import annotations

from bastion.gate.interface import AuditEntry, AuditLog
from bastion.resilience.breaker import BreakerEvent, BreakerState, EventSink


def audit_sink(audit: AuditLog) -> EventSink:
    """A breaker event sink appending each state change to `audit`."""

    async def append(event: BreakerEvent) -> None:
        await audit.append(
            AuditEntry(
                at=event.at,
                action="breaker_change",
                decision="deny" if event.new is BreakerState.OPEN else "allow",
                principal_id=None,
                reason=f"circuit breaker {event.name}: {event.old} -> {event.new}",
                details={"breaker": event.name, "from": str(event.old), "to": str(event.new)},
            )
        )

    return append
