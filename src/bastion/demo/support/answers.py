"""The support agent's answer: what the tools returned, worded for the customer.

`compose_answer` is the demo's `AnswerComposer`. It builds every sentence from a step's result,
parsed back into the tool's result model, and from nothing else: not the model's reasoning, not a
step's description. So it cannot claim a refund or a ticket that no successful step returned, and
a result that does not parse is treated as a failure rather than guessed at. A step that failed or
was denied is named plainly ("I could not look up order A9999") without the error's internals,
which are for operators.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bastion.demo.support.data import normalise_order_id
from bastion.demo.support.results import (
    KbHit,
    OrderDetails,
    RefundQuote,
    RefundReceipt,
    ShipmentStatus,
    TicketReceipt,
)
from bastion.memory.tools import RememberedFact
from bastion.messages import AgentRequest, JsonObject, StepRecord, StepStatus

CAPABILITIES = (
    "I am not sure how I can help with that. I can look up your orders and track their "
    "delivery, answer questions from our help centre (passwords, shipping, returns, refunds and "
    "more), and pass your request to a person on our support team. What would you like to do?"
)

_KB_HITS: TypeAdapter[list[KbHit]] = TypeAdapter(list[KbHit])


@dataclass(slots=True)
class _Story:
    """The answer so far.

    `subject` is the order the last sentence was about, so that the next one can say "It"
    instead of repeating the order number.
    """

    sentences: list[str]
    subject: str | None = None

    def refer(self, order_id: str) -> str:
        return "It" if self.subject == order_id else f"Order {order_id}"


def compose_answer(request: AgentRequest, records: Sequence[StepRecord]) -> str:
    """Word the step results of a run for the customer who asked `request`."""
    latest = _latest_per_step(records)
    if not latest:
        return CAPABILITIES
    story = _Story(sentences=[])
    told: set[tuple[str, str, StepStatus, str]] = set()
    for record in latest:
        # The same call with the same outcome (a small model repeats steps, a replan repeats a
        # denied one) tells the customer nothing new: say it once.
        key = (
            record.tool_name or record.step.tool_name,
            json.dumps(record.step.tool_args, sort_keys=True, default=str),
            record.status,
            json.dumps(record.outcome.value if record.outcome else None, default=str),
        )
        if key in told:
            continue
        told.add(key)
        _tell(story, record)
    return " ".join(story.sentences)


def _latest_per_step(records: Sequence[StepRecord]) -> list[StepRecord]:
    # A step retried or resumed may be recorded more than once; its last record is what happened.
    by_step: dict[int, StepRecord] = {}
    for record in records:
        by_step.pop(record.step.step_id, None)
        by_step[record.step.step_id] = record
    return list(by_step.values())


def _tell(story: _Story, record: StepRecord) -> None:
    tool = record.tool_name or record.step.tool_name
    args = record.step.tool_args
    wording = _WORDINGS.get(tool)
    if wording is None:
        story.sentences.append(_unknown_tool(record, tool))
        story.subject = None
        return
    if record.status is StepStatus.SUCCESS and record.outcome is not None:
        try:
            story.sentences.append(wording.success(story, record.outcome.value))
            return
        except ValidationError:
            # Not what this tool returns: say it could not be done rather than guess.
            pass
    story.subject = None
    action = wording.action(args)
    if record.status is StepStatus.DENIED:
        story.sentences.append(f"Sorry, I am not allowed to {action} for you.")
    elif record.status in (StepStatus.FAILED, StepStatus.SUCCESS):
        story.sentences.append(f"Sorry, I could not {action}.")
    else:
        story.sentences.append(f"I did not get to {action}.")


def _unknown_tool(record: StepRecord, tool: str) -> str:
    if record.status is StepStatus.SUCCESS:
        return f"I ran {tool}."
    return f"Sorry, I could not run {tool}."


def _order_arg(args: JsonObject) -> str:
    order_id = args.get("order_id")
    return f"order {normalise_order_id(order_id)}" if isinstance(order_id, str) else "your order"


def _money(amount: str, currency: str) -> str:
    return f"{amount} {currency}"


def _order_sentence(story: _Story, value: Any) -> str:
    order = OrderDetails.model_validate(value)
    units = sum(item.quantity for item in order.items)
    things = "1 item" if units == 1 else f"{units} items"
    sentence = (
        f"{story.refer(order.order_id)} is {order.status} ({things}, total "
        f"{_money(order.total, order.currency)}), placed on {order.placed_on}"
    )
    if order.refunded != "0.00":
        sentence += f"; {_money(order.refunded, order.currency)} of it has been refunded"
    story.subject = order.order_id
    return sentence + "."


def _shipment_sentence(story: _Story, value: Any) -> str:
    shipment = ShipmentStatus.model_validate(value)
    subject = story.refer(shipment.order_id)
    story.subject = shipment.order_id
    if not shipment.shipped:
        return f"{subject} has not shipped yet (its status is {shipment.order_status})."
    parcel = f"{shipment.carrier}, tracking {shipment.tracking_number}"
    if shipment.status == "delivered":
        return f"{subject} was delivered by {parcel}, in {shipment.last_location}."
    where = "is out for delivery with" if shipment.status == "out_for_delivery" else "is with"
    return (
        f"{subject} {where} {parcel}, last seen in {shipment.last_location}; "
        f"expected on {shipment.eta}."
    )


def _kb_sentence(story: _Story, value: Any) -> str:
    hits = _KB_HITS.validate_python(value)
    story.subject = None
    if not hits:
        return "I could not find a help article about that."
    best, others = hits[0], hits[1:]
    sentence = f"From our help centre, “{best.title}”: {best.snippet}"
    if others:
        sentence += " Related: " + "; ".join(f"“{hit.title}”" for hit in others) + "."
    return sentence


def _refund_sentence(story: _Story, value: Any) -> str:
    refund = RefundReceipt.model_validate(value)
    story.subject = None
    return (
        f"I have refunded {_money(refund.amount, refund.currency)} on order {refund.order_id} "
        f"(refund {refund.refund_id}); the money will be {refund.arrives}."
    )


def _quote_sentence(story: _Story, value: Any) -> str:
    quote = RefundQuote.model_validate(value)
    story.subject = None
    items = " and ".join(quote.returned)
    return (
        f"For the {items} returned from order {quote.order_id}, a pro-rata refund comes to "
        f"{_money(quote.refund, quote.currency)} ({quote.share_percent}% of the "
        f"{_money(quote.paid, quote.currency)} paid); nothing has been refunded yet."
    )


def _remember_sentence(story: _Story, value: Any) -> str:
    noted = RememberedFact.model_validate(value)
    story.subject = None
    return f"I have noted this for your next conversations: “{noted.fact}”."


def _ticket_sentence(story: _Story, value: Any) -> str:
    ticket = TicketReceipt.model_validate(value)
    story.subject = None
    urgent = ", marked urgent" if ticket.priority == "high" else ""
    # Not "as you asked": the channel is what the model passed, which it may have guessed.
    by = f", by {ticket.contact}" if ticket.contact else ""
    return (
        f"I have passed your request to our support team (ticket {ticket.ticket_id}{urgent}); "
        f"you can expect an answer {ticket.expected_response}{by}."
    )


@dataclass(frozen=True, slots=True)
class _Wording:
    #: The sentence for a successful result; raises `ValidationError` if the value is not one.
    success: Callable[[_Story, Any], str]
    #: What the step set out to do, as a verb phrase: "look up order A1001".
    action: Callable[[JsonObject], str]


_WORDINGS: dict[str, _Wording] = {
    "lookup_order": _Wording(_order_sentence, lambda a: f"look up {_order_arg(a)}"),
    "track_shipment": _Wording(_shipment_sentence, lambda a: f"track {_order_arg(a)}"),
    "search_kb": _Wording(_kb_sentence, lambda a: "search our help centre"),
    "issue_refund": _Wording(_refund_sentence, lambda a: f"issue a refund on {_order_arg(a)}"),
    "escalate_to_human": _Wording(
        _ticket_sentence, lambda a: "pass your request to our support team"
    ),
    "prorata_refund": _Wording(
        _quote_sentence, lambda a: f"work out a pro-rata refund on {_order_arg(a)}"
    ),
    "remember": _Wording(_remember_sentence, lambda a: "note that for your next conversations"),
}
