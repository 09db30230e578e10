"""Tools shared by the planner's tests: built by hand, as the router's `@tool` would build them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.router.interface import ToolSpec


class LookupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(description="The order number, e.g. A-1001.")


class RefundArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    amount: float
    reason: str | None = None

    @field_validator("order_id")
    @classmethod
    def _known_prefix(cls, value: str) -> str:
        # A check the JSON schema cannot express: only the tool's own validation catches it.
        if not value.startswith("A-"):
            raise ValueError("order ids start with 'A-'")
        return value


def make_tool(name: str, args_model: type[BaseModel], **kwargs: Any) -> ToolSpec:
    kwargs.setdefault("description", f"The {name} tool.")
    return ToolSpec(
        name=name,
        fn=lambda **_: None,
        args_model=args_model,
        args_schema=args_model.model_json_schema(),
        is_async=False,
        **kwargs,
    )


@pytest.fixture
def lookup() -> ToolSpec:
    return make_tool("lookup_order", LookupArgs, description="Look up an order by its number.")


@pytest.fixture
def refund() -> ToolSpec:
    return make_tool("refund_order", RefundArgs, description="Refund part or all of an order.")


@pytest.fixture
def tool_factory() -> Callable[..., ToolSpec]:
    return make_tool
