"""Policy checks on the final answer, each a small pure function of the answer and the run's steps.

The answer is the last thing a run produces and the first the user reads, so it is checked for
what no single step's check can see:

* **secrets**: anything `bastion.gate.redact.Redactor` would hide (API keys, tokens, card
  numbers, ``password=...`` pairs, the app's declared secret fields and known secrets): noted,
  not a failure, since the redactor hides it from the answer the user gets;
* **other users' data**: a step result that belongs to someone else (an ``OWNER_KEYS`` field naming
  another user) whose id or values the answer repeats, unless the caller may see other users'
  data (staff);
* **claims the steps do not back**: a sentence saying something was *done* in this run ("I have
  refunded", "your refund has been issued") with no successful step of a tool that does it
  (`ClaimRule`). Past facts a tool reported ("20.00 of it has been refunded") and quotes ("nothing
  has been refunded yet") are not claims of an action: the patterns require the first person or
  "your refund ... issued", and the negation of a claim is not one.

These checks see words, not meaning: a claim phrased in a way no pattern knows passes. The
optional model judge (`bastion.evaluator.judge`) is the net for those.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from bastion.gate.redact import Redactor
from bastion.messages import Json, Principal, StepRecord, StepStatus

#: Fields of a tool result that name whom the data belongs to.
OWNER_KEYS = ("user_id", "customer_id", "owner_id")
#: Values shorter than this are not looked for in the answer (too likely to match by chance).
_MIN_VALUE_CHARS = 4
_DISTINCTIVE = re.compile(r"[0-9A-Z@]")
_NEGATION = re.compile(r"\b(?:not|no|never|nothing|n't)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRule:
    """An action the answer may claim only if a successful step of one of these tools did it."""

    name: str
    #: Finds a claim of the action in the answer (searched case-insensitively).
    claim: str
    #: Tool names that do the action (full match, case-insensitive).
    tools: str

    def __post_init__(self) -> None:
        re.compile(self.claim)
        re.compile(self.tools)


#: Claims the default Evaluator checks. A tool named ``issue_refund``, ``refund`` or
#: ``refund_order`` backs a refund claim; ``prorata_refund`` (which only computes) does not.
DEFAULT_CLAIMS: tuple[ClaimRule, ...] = (
    ClaimRule(
        name="refund",
        claim=r"\b(?:I|we)(?:\s+have|'ve)?\s+(?:just\s+)?(?:refunded|issued\s+(?:a|the|your)\s+"
        r"refund|processed\s+(?:a|the|your)\s+refund)"
        r"|\b(?:your|the|a)\s+refund\s+(?:of\s+\S+\s+\S+\s+)?(?:has\s+been|was|is\s+now)\s+"
        r"(?:issued|processed|made|sent)",
        tools=r"(?:(?:issue|create|make|process)_)?refunds?(?:_\w+)?",
    ),
    ClaimRule(
        name="escalation",
        claim=r"\b(?:I|we)(?:\s+have|'ve)?\s+(?:passed|handed|forwarded|escalated)\s+(?:your|this|the)"
        r"\s+(?:request|conversation|case)|\b(?:I|we)(?:\s+have|'ve)?\s+opened\s+a\s+ticket",
        tools=r"\w*(?:escalat|ticket)\w*",
    ),
)


def check_secrets(answer: str, redactor: Redactor) -> str | None:
    """A problem if the answer holds anything the redactor would hide."""
    if redactor.text(answer) != answer:
        return "the answer contains a secret (a key, token, password or card number)"
    return None


def check_other_users(
    answer: str,
    records: Sequence[StepRecord],
    *,
    principal: Principal,
    may_see_others: Callable[[Principal], bool],
) -> str | None:
    """A problem if the answer repeats data from a step result that belongs to another user."""
    if may_see_others(principal):
        return None
    lowered = answer.casefold()
    for record in _succeeded(records):
        value = record.outcome.value if record.outcome is not None else None
        for owner, data in _owned(value):
            if owner == principal.id:
                continue
            shown = [v for v in _strings(data) if v.casefold() in lowered]
            if owner.casefold() in lowered or shown:
                return (
                    f"the answer repeats data of another user ({owner!r}) from step "
                    f"{record.step.step_id} ({_tool(record)})"
                )
    return None


def check_claims(
    answer: str, records: Sequence[StepRecord], rules: Sequence[ClaimRule]
) -> list[str]:
    """Every action the answer claims that no successful step of this run did."""
    done = {_tool(record).casefold() for record in _succeeded(records)}
    problems = []
    for rule in rules:
        claimed = [
            m for m in re.finditer(rule.claim, answer, re.IGNORECASE) if not _negated(answer, m)
        ]
        if claimed and not any(re.fullmatch(rule.tools, t, re.IGNORECASE) for t in done):
            problems.append(
                f"the answer claims a {rule.name} ({claimed[0].group(0)!r}) that no successful "
                "step of this run did"
            )
    return problems


def _negated(answer: str, match: re.Match[str]) -> bool:
    """Whether the words just before the claim, in its sentence, negate it."""
    start = max(answer.rfind(".", 0, match.start()), answer.rfind("\n", 0, match.start())) + 1
    before = answer[start : match.start()]
    return bool(_NEGATION.search(before + match.group(0)))


def _succeeded(records: Sequence[StepRecord]) -> Iterator[StepRecord]:
    for record in records:
        if record.status is StepStatus.SUCCESS and record.outcome is not None:
            yield record


def _tool(record: StepRecord) -> str:
    return record.tool_name or record.step.tool_name


def _owned(value: Json) -> Iterator[tuple[str, Json]]:
    """Each mapping in `value` (at any depth) that names an owner, with that owner."""
    if isinstance(value, Mapping):
        for key in OWNER_KEYS:
            owner = value.get(key)
            if isinstance(owner, str) and owner:
                yield owner, value
                break
        for item in value.values():
            yield from _owned(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _owned(item)


def _strings(value: Json) -> Iterator[str]:
    """The distinctive strings of a result (ids, names), skipping the owner fields themselves."""
    if isinstance(value, str):
        # Ids, names, addresses: not the common words a status or a unit is ("shipped", "EUR").
        if len(value) >= _MIN_VALUE_CHARS and _DISTINCTIVE.search(value):
            yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key not in OWNER_KEYS:
                yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
