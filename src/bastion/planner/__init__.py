"""The Planner: a schema-constrained plan from the model, repaired when the model gets it wrong."""

from bastion.planner.default import ModelPlanner
from bastion.planner.interface import Planner, PlanningContext
from bastion.planner.plan_schema import build_plan_schema, validate_plan

__all__ = ["ModelPlanner", "Planner", "PlanningContext", "build_plan_schema", "validate_plan"]
