"""The demo's requests: what customers and a support lead ask the agent, one per path through it.

Together they walk every part of the runtime: reading an order and its parcel, answering from the
help centre, escalating to a person, a refund with a side effect, a policy denial (a customer
asking for someone else's order), a tool a customer may not even be offered (refunds), and the
refund cap, a refund worked out in code (``run_python``, in the os sandbox), and long-term
memory: a preference a customer states in one session, recalled in their next. Each request has
its own session so that one request's history never steers another's plan (long-term facts, kept
per user, are what crosses sessions). `script.json` holds, for each, the plan a good model would
make.
"""

from __future__ import annotations

from typing import NamedTuple


class DemoRequest(NamedTuple):
    """Who asks what, in which session; unpacks as ``(user_id, session_id, message)``."""

    user_id: str
    session_id: str
    message: str


DEMO_REQUESTS: tuple[DemoRequest, ...] = (
    # lookup_order + track_shipment on the customer's own shipped order.
    DemoRequest("c1", "demo-c1-tracking", "Where is my order A1001?"),
    # search_kb only.
    DemoRequest("c1", "demo-c1-password", "How do I reset my password?"),
    # search_kb, then escalate_to_human.
    DemoRequest("c2", "demo-c2-damaged", "My parcel arrived damaged, I want to talk to a human"),
    # issue_refund by a support lead, within the cap.
    DemoRequest(
        "lead",
        "demo-lead-refund",
        "Refund 20.00 on order A1003, the customer was charged twice for shipping",
    ),
    # lookup_order of another customer's order: denied by the ownership policy.
    DemoRequest("c1", "demo-c1-other-order", "Show me the details of order A1003"),
    # A customer lacks refunds:write, so the planner is never offered issue_refund: it escalates.
    DemoRequest("c1", "demo-c1-refund", "Please refund my order A1002"),
    # issue_refund above the cap: needs a human approval (the demo has no approver: it waits).
    DemoRequest(
        "lead",
        "demo-lead-big-refund",
        "Refund 250.00 on order A1007, the espresso machine arrived broken",
    ),
    # search_kb + lookup_order: a how-to question about the customer's own pending order.
    DemoRequest("c3", "demo-c3-cancel", "Can I still cancel my order A1005?"),
    # Long-term memory, session 1: a lasting preference, kept with the remember tool.
    DemoRequest("c4", "demo-c4-preference", "Please contact me by email from now on, not by phone"),
    # Session 2 (a new session, the same customer): the preference, recalled from memory, goes
    # into the ticket for the support team.
    DemoRequest("c4", "demo-c4-grinder", "My coffee grinder stopped working, I need a person"),
    # prorata_refund: a refund worked out in code (run_python, in the os sandbox).
    DemoRequest(
        "lead",
        "demo-lead-prorata",
        "Order A1003 was paid 112.05 after a 10% voucher and the customer returns the coffee "
        "scale: work out the refund pro rata",
    ),
)
