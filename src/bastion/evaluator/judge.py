"""`ModelJudge`: an optional model call that judges the final answer against a short rubric.

Off by default (``BASTION_EVALUATOR__JUDGE=true`` turns it on): it costs one model call per run,
charged to the run's budget. The judge sees the request, what each step returned (compact, cut to
`RESULT_MAX_CHARS` each) and the answer, and answers ``{"verdict": "pass"|"fail", "reason": ...}``
(the schema is sent as the response format, so constrained decoders cannot answer otherwise).

A judge that cannot judge (the model failed, or its answer is not the JSON asked for) returns
``passed=None``: no verdict is not a failing verdict, and the run is not failed for it. Its verdict
and reason are recorded as a run event by the respond stage, whether or not it blocks the answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.errors import BudgetExceeded
from bastion.messages import AgentRequest, StepRecord
from bastion.models.interface import ChatMessage, ChatModel, ChatRequest

logger = logging.getLogger(__name__)

RESULT_MAX_CHARS = 600
REASON_MAX_CHARS = 300

DEFAULT_RUBRIC = (
    "You check an assistant's final answer before the user sees it. The answer fails if it: "
    "claims an action (a refund, a ticket, a change) that no step result shows was done; states "
    "a fact that contradicts a step result; reveals a secret or another customer's data; or does "
    "not address the request. Otherwise it passes. Judge only from the request and the step "
    "results shown."
)

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["pass", "fail"]},
        "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
    },
    "required": ["verdict", "reason"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class JudgeVerdict:
    """What the judge said: pass (True), fail (False) or nothing usable (None), and why."""

    passed: bool | None
    reason: str
    model: str | None = None


class ModelJudge:
    """Asks a model whether an answer is faithful to the run's step results.

    Args:
        rubric: what makes an answer fail, in a few sentences.
        max_tokens: the judge's output bound.
    """

    def __init__(self, *, rubric: str = DEFAULT_RUBRIC, max_tokens: int = 200) -> None:
        self._rubric = rubric
        self._max_tokens = max_tokens

    def prompt(
        self, request: AgentRequest, records: Sequence[StepRecord], answer: str
    ) -> ChatRequest:
        """The judge's request for this answer."""
        lines = [_step(record) for record in records] or ["(no steps ran)"]
        user = (
            f"Request:\n{request.message}\n\nStep results, one per line:\n"
            + "\n".join(lines)
            + f"\n\nAnswer to judge:\n{answer}\n\n"
            'Reply with {"verdict": "pass" or "fail", "reason": "<one sentence>"}.'
        )
        return ChatRequest(
            messages=(
                ChatMessage(role="system", content=self._rubric),
                ChatMessage(role="user", content=user),
            ),
            json_schema=_SCHEMA,
            schema_name="verdict",
            max_tokens=self._max_tokens,
            temperature=0.0,
        )

    async def judge(
        self,
        request: AgentRequest,
        records: Sequence[StepRecord],
        answer: str,
        *,
        model: ChatModel,
    ) -> JudgeVerdict:
        """The model's verdict on `answer`; ``passed=None`` when it gave none usable.

        Raises:
            BudgetExceeded: the run cannot afford the call (the caller decides what then).
        """
        try:
            response = await model.complete(self.prompt(request, records, answer))
        except BudgetExceeded:
            raise
        except Exception as exc:  # the judge is advisory: its failure must not fail the run
            logger.warning("the answer judge %s failed: %r", model.name, exc)
            return JudgeVerdict(passed=None, reason=f"judge unavailable: {exc}", model=model.name)
        return parse_verdict(response.text, model=model.name)


def parse_verdict(text: str, *, model: str | None = None) -> JudgeVerdict:
    """Read the judge's JSON answer; anything else is no verdict (``passed=None``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return JudgeVerdict(passed=None, reason="the judge did not answer in JSON", model=model)
    verdict = data.get("verdict") if isinstance(data, dict) else None
    reason = data.get("reason") if isinstance(data, dict) else None
    if verdict not in ("pass", "fail") or not isinstance(reason, str):
        return JudgeVerdict(passed=None, reason="the judge's answer had no verdict", model=model)
    return JudgeVerdict(passed=verdict == "pass", reason=reason[:REASON_MAX_CHARS], model=model)


def _step(record: StepRecord) -> str:
    outcome = record.outcome
    entry: dict[str, Any] = {
        "tool": record.tool_name or record.step.tool_name,
        "args": dict(record.step.tool_args),
        "status": record.status.value,
    }
    if outcome is not None and outcome.ok:
        entry["result"] = outcome.value
    elif outcome is not None:
        entry["error"] = outcome.error
    text = json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))
    return text if len(text) <= RESULT_MAX_CHARS else text[: RESULT_MAX_CHARS - 1] + "…"
