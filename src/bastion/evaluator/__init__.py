"""The Evaluator: judges each step's outcome and returns a `Verdict` (passed, reason, retryable)."""

from bastion.evaluator.default import ChecksEvaluator
from bastion.evaluator.interface import Evaluator

__all__ = ["ChecksEvaluator", "Evaluator"]
