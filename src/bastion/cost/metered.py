"""`MeteredChatModel`: a `ChatModel` wrapper that pays for every call through the Cost Controller.

Metering is cross-cutting, so it is a wrapper around whatever model the run uses, not a flag on
each model: reserve the call's worst case, make the call, settle at the provider's usage. The worst
case's input is the wrapped model's own count of the request's tokens when it has a tokenizer at
hand (`bastion.cost.tokens.with_token_count`), else an estimate from its size. If the
call does not produce a response, for any reason (a provider error, a timeout, the task being
cancelled), the hold is released before the exception goes on, so a failed call costs nothing and
holds nothing. The release is shielded from a second cancellation; if it fails all the same (the
database is down), the hold expires and the ledger's reconciler frees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal

from bastion.cost.interface import CostController, Reservation
from bastion.cost.tokens import with_token_count
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse

logger = logging.getLogger(__name__)

#: Called after each paid call with the response and its settled cost.
OnCall = Callable[[ChatResponse, Decimal], None]


class MeteredChatModel(ChatModel):
    """Charges each call of `wrapped` to run `run_id`'s budget; keeps token and cost totals.

    Args:
        wrapped: the model that answers.
        cost: the controller holding the run's budget.
        run_id: the run calls are charged to.
        on_call: told of each settled call (e.g. to emit a ``model_call`` run event).
    """

    def __init__(
        self,
        *,
        wrapped: ChatModel,
        cost: CostController,
        run_id: str,
        on_call: OnCall | None = None,
    ) -> None:
        self.wrapped = wrapped
        self.run_id = run_id
        self._cost = cost
        self._on_call = on_call
        #: Totals over this wrapper's settled calls.
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = Decimal(0)
        self.calls = 0

    @property
    def name(self) -> str:
        return self.wrapped.name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Count (where it can), reserve, call `wrapped`, settle; release the hold on no response.

        Raises:
            BudgetExceeded: the budget cannot afford the call (the model is not called).
            ModelError: whatever `wrapped` raised, after the hold is released.
        """
        counted = await with_token_count(self.wrapped, request)
        reservation = await self._cost.reserve(self.run_id, self.wrapped.name, counted)
        try:
            response = await self.wrapped.complete(request)
        except BaseException:
            # Includes CancelledError: clean up, then let the original exception go on.
            await asyncio.shield(self._release(reservation))
            raise
        cost = await self._cost.settle(reservation, response.usage)
        self.calls += 1
        self.input_tokens += response.usage.input_tokens
        self.output_tokens += response.usage.output_tokens
        self.cost_usd += cost
        if self._on_call is not None:
            self._on_call(response, cost)
        return response

    async def _release(self, reservation: Reservation) -> None:
        try:
            await self._cost.release(reservation)
        except ValueError:
            # The hold is gone already (the run was finished while the call was in flight):
            # nothing is left to release, and the call's own exception is the one to report.
            logger.warning(
                "the hold of a failed call to %r on run %s was already gone",
                self.wrapped.name,
                self.run_id,
            )
        except Exception:
            # The call's own exception is the one to report; the hold expires and is reconciled.
            logger.exception(
                "could not release the hold of a failed call to %r on run %s; it will expire",
                self.wrapped.name,
                self.run_id,
            )
