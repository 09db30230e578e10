"""The Cost Controller: prices, per-run budgets enforced by reservation, and metered models.

`LedgerCostController` is the default controller; `PriceTable` says what a call costs;
`MeteredChatModel` charges every call of a wrapped model to a run's budget;
`estimate_input_tokens` sizes a call's reservation before it is made.
"""

from bastion.cost.default import LedgerCostController
from bastion.cost.interface import CostController, Reservation
from bastion.cost.ledger import LedgerSnapshot, RunLedger
from bastion.cost.metered import MeteredChatModel, OnCall
from bastion.cost.pricing import PRICES_VERSION, SHIPPED_PRICES, PriceTable
from bastion.cost.tokens import estimate_input_tokens

__all__ = [
    "PRICES_VERSION",
    "SHIPPED_PRICES",
    "CostController",
    "LedgerCostController",
    "LedgerSnapshot",
    "MeteredChatModel",
    "OnCall",
    "PriceTable",
    "Reservation",
    "RunLedger",
    "estimate_input_tokens",
]
