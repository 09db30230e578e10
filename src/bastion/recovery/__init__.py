"""The Recovery Handler: from a failure to retry, fallback, replan or abort (flow acts on it)."""

from bastion.recovery.default import PolicyRecovery
from bastion.recovery.interface import Failure, RecoveryHandler
from bastion.recovery.policy import decide

__all__ = ["Failure", "PolicyRecovery", "RecoveryHandler", "decide"]
