"""Durable execution on DBOS Transact: the one seam between Bastion and its workflow engine.

Runs survive kill -9 and restarts, side effects never run twice for the same step, approvals and
operator decisions wait durably, workers scale out over PostgreSQL. See `engine` for how each of
DBOS's sharp edges is handled.
"""

from bastion.durable.admin import DurableAdmin, WorkflowInfo
from bastion.durable.engine import WORKFLOW_VERSION, DurableEngine

__all__ = ["WORKFLOW_VERSION", "DurableAdmin", "DurableEngine", "WorkflowInfo"]
