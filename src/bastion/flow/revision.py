"""Revising the remaining steps after a step succeeded (DESIGN.md §2: "after every step").

Replanning after a failure is the Recovery Handler's decision (`bastion.recovery.policy`), bounded
by ``recovery.max_replans``. Revising after a success is a setting,
``planner.replan_after_each_step``, with its own bound, ``planner.max_revisions``, so that a run
that revises after each step does not use up the replans kept for failures. Each revision is a
plan revision like a replan: saved with the run (``MemoryManager.save_plan``, table
``run_plans``), announced by a ``replan`` event with ``after="success"``, its steps numbered after
the history.
"""

from __future__ import annotations

from bastion.messages import PlanStep
from bastion.settings import PlannerSettings


def revise_after_step(settings: PlannerSettings, revisions_done: int) -> bool:
    """Whether to ask the planner to revise the remaining steps after a successful step.

    Args:
        settings: ``replan_after_each_step`` switches it on, ``max_revisions`` bounds it.
        revisions_done: Revisions after successes already made in this run.
    """
    return settings.replan_after_each_step and revisions_done < settings.max_revisions


def revision_feedback(step: PlanStep) -> str:
    """Why the planner is asked again: the step that just succeeded, by id and tool."""
    return (
        f"step {step.step_id} ({step.tool_name}) succeeded; revise the remaining steps given its "
        "result (keep them if they still fit, change or drop them if they do not)"
    )
