"""The Cost Controller: prices, budgets enforced by reservation, metering, cascades and guards.

`SqlCostController` is the default controller (budgets per run, session, user and app in the
database, a hard cap across processes); `LedgerCostController` keeps per-run budgets in process.
`PriceTable` says what a call costs; `MeteredChatModel` charges every call of a wrapped model to
a run's budget; `estimate_input_tokens` sizes a call's reservation before it is made.
`Cascade` routes a run from a cheap model to stronger ones; `CallCap` and `LoopGuard` stop
runaway runs; `usage_report` reads spend, tokens, calls and denials from the ledger.
"""

from bastion.cost.cascade import Cascade, CascadeRun, Escalation
from bastion.cost.default import LedgerCostController
from bastion.cost.guards import CallCap, LoopGuard
from bastion.cost.interface import CostController, Reservation
from bastion.cost.ledger import LedgerSnapshot, RunLedger
from bastion.cost.metered import MeteredChatModel, OnCall
from bastion.cost.pricing import PRICES_VERSION, SHIPPED_PRICES, PriceTable
from bastion.cost.sql import SqlCostController
from bastion.cost.tokens import estimate_input_tokens
from bastion.cost.usage import UsageLine, usage_report
from bastion.cost.windows import Budget, budgets_for

__all__ = [
    "PRICES_VERSION",
    "SHIPPED_PRICES",
    "Budget",
    "CallCap",
    "Cascade",
    "CascadeRun",
    "CostController",
    "Escalation",
    "LedgerCostController",
    "LedgerSnapshot",
    "LoopGuard",
    "MeteredChatModel",
    "OnCall",
    "PriceTable",
    "Reservation",
    "RunLedger",
    "SqlCostController",
    "UsageLine",
    "budgets_for",
    "estimate_input_tokens",
    "usage_report",
]
