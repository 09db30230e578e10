"""Older turns summarised by the model within the budget: stored, reused, and refolded when due."""

from __future__ import annotations

from bastion.errors import ModelUnavailable
from bastion.memory import SqlMemory
from bastion.memory.summaries import fold_prompt
from bastion.messages import AgentRequest
from bastion.models.interface import ChatRequest
from bastion.models.scripted import ScriptedModel
from bastion.testing.clock import FakeClock

BUDGET = 300


def _request(message: str = "and now?", *, user: str = "u1") -> AgentRequest:
    return AgentRequest(user_id=user, session_id="long", message=message)


def _summary_of(request: ChatRequest) -> str:
    # Says which turns it saw, so that the test can tell a fresh summary from a reused one.
    text = request.messages[-1].content
    asked = [line for line in text.splitlines() if line.startswith("user: ")]
    return f"Summary covering {len(asked)} more question(s); last: {asked[-1][6:]}"


async def test_a_long_conversation_stays_within_budget_with_the_summary_in_context(
    memory: SqlMemory, clock: FakeClock, chat
):
    model = ScriptedModel([_summary_of])
    await chat(memory, clock, "long", [f"question {n} about order A10{n:02d}" for n in range(12)])
    context = await memory.load_context(_request(), token_budget=BUDGET, model=model)
    assert context.token_count <= BUDGET
    assert context.summary is not None
    assert context.summary.startswith("Summary covering")
    assert context.turns, "the newest turns stay verbatim"
    assert context.turns[-1].content == "answer to question 11 about order A1011"
    # Every turn is either verbatim or covered by the summary; none is lost silently.
    assert context.summarised_turns + len(context.turns) == 24
    assert context.omitted_turns == context.summarised_turns
    model.assert_consumed()


async def test_the_stored_summary_is_reused_not_recomputed_every_turn(
    memory: SqlMemory, clock: FakeClock, chat
):
    model = ScriptedModel([_summary_of, _summary_of])
    await chat(memory, clock, "long", [f"question {n} about order A10{n:02d}" for n in range(12)])
    first = await memory.load_context(_request(), token_budget=BUDGET, model=model)
    assert len(model.calls) == 1
    # One more exchange: it fits the half of the window left free, so no new summary.
    await chat(memory, clock, "long", ["question 12"])
    second = await memory.load_context(_request(), token_budget=BUDGET, model=model)
    assert len(model.calls) == 1
    assert second.summary == first.summary
    assert second.turns[-1].content == "answer to question 12"
    assert second.token_count <= BUDGET
    # Many more: the window overflows again and the model folds only the new turns.
    await chat(memory, clock, "long", [f"question {n} with more words" for n in range(13, 20)])
    third = await memory.load_context(_request(), token_budget=BUDGET, model=model)
    assert len(model.calls) == 2
    assert third.summary != first.summary
    assert "Summary so far:\n" + (first.summary or "") in model.calls[1].messages[-1].content
    assert "question 0 " not in model.calls[1].messages[-1].content  # already summarised
    assert third.token_count <= BUDGET
    assert third.summarised_turns + len(third.turns) == 40


async def test_without_a_model_older_turns_are_left_out_and_nothing_is_stored(
    sqlite_memory: SqlMemory, clock: FakeClock, chat
):
    memory = sqlite_memory
    await chat(memory, clock, "long", [f"question {n} about order A10{n:02d}" for n in range(12)])
    context = await memory.load_context(_request(), token_budget=BUDGET)
    assert context.summary is None
    assert context.omitted_turns > 0
    assert context.token_count <= BUDGET
    assert len(context.turns) + context.omitted_turns == 24


async def test_a_failing_summary_call_does_not_fail_the_context(
    sqlite_memory: SqlMemory, clock: FakeClock, chat
):
    model = ScriptedModel([ModelUnavailable("down")])
    await chat(sqlite_memory, clock, "long", [f"question {n} about A10{n:02d}" for n in range(12)])
    context = await sqlite_memory.load_context(_request(), token_budget=BUDGET, model=model)
    assert context.summary is None
    assert context.omitted_turns > 0
    assert context.token_count <= BUDGET


async def test_summaries_are_per_user_even_on_a_shared_session_id(
    sqlite_memory: SqlMemory, clock: FakeClock, chat
):
    model = ScriptedModel([_summary_of])
    await chat(sqlite_memory, clock, "long", [f"question {n} about A10{n:02d}" for n in range(12)])
    mine = await sqlite_memory.load_context(_request(), token_budget=BUDGET, model=model)
    assert mine.summary is not None
    theirs = await sqlite_memory.load_context(_request(user="u2"), token_budget=BUDGET, model=model)
    assert theirs.summary is None
    assert theirs.turns == ()


def test_the_fold_prompt_carries_the_previous_summary_and_the_turns_in_order():
    from datetime import UTC, datetime

    from bastion.memory import Turn

    at = datetime(2026, 1, 1, tzinfo=UTC)
    prompt = fold_prompt(
        "Earlier: asked about A1001.",
        [
            Turn(role="user", content="refund it", at=at),
            Turn(role="assistant", content="ok", at=at),
        ],
    )
    text = prompt.messages[-1].content
    assert text.index("Earlier: asked about A1001.") < text.index("user: refund it")
    assert text.index("user: refund it") < text.index("assistant: ok")
    assert prompt.max_tokens <= 300
