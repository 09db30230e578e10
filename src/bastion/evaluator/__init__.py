"""The Evaluator: judges each step's outcome and the final answer (`Verdict`, `AnswerVerdict`)."""

from bastion.evaluator.answer import DEFAULT_CLAIMS, ClaimRule
from bastion.evaluator.default import ChecksEvaluator
from bastion.evaluator.interface import AnswerVerdict, Evaluator
from bastion.evaluator.judge import JudgeVerdict, ModelJudge

__all__ = [
    "DEFAULT_CLAIMS",
    "AnswerVerdict",
    "ChecksEvaluator",
    "ClaimRule",
    "Evaluator",
    "JudgeVerdict",
    "ModelJudge",
]
