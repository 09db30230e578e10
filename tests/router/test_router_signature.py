from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from bastion.errors import ConfigError, InvalidToolArgs
from bastion.messages import Principal
from bastion.router.interface import ToolContext
from bastion.router.signature import inspect_tool


class Address(BaseModel):
    """A postal address."""

    street: str
    city: str = "Paris"


class Customer(BaseModel):
    name: str
    addresses: list[Address]


class Node(BaseModel):
    value: int
    children: list[Node] = []


class OrderRow(TypedDict):
    order_id: int
    placed_at: datetime


class Opaque:
    """Not something pydantic knows how to validate."""


OPAQUE = Opaque()


def test_required_and_default_params_and_plain_schema() -> None:
    def lookup(order_id: int, verbose: bool = False) -> None:
        """Look up an order."""

    sig = inspect_tool(lookup, name="lookup")

    assert sig.args_schema == {
        "type": "object",
        "properties": {
            "order_id": {"type": "integer"},
            "verbose": {"type": "boolean", "default": False},
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }
    assert sig.description == "Look up an order."
    assert sig.is_async is False
    assert sig.context_param is None
    assert sig.return_adapter is None
    assert sig.return_schema is None


def test_args_model_forbids_extra_keys_and_applies_defaults() -> None:
    def lookup(order_id: int, verbose: bool = False) -> None:
        """Look up an order."""

    sig = inspect_tool(lookup, name="lookup")

    assert sig.args_model.model_validate({"order_id": 3}).model_dump() == {
        "order_id": 3,
        "verbose": False,
    }
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        sig.args_model.model_validate({"order_id": 3, "invented": 1})


def test_no_parameters_gives_an_empty_closed_object() -> None:
    async def ping() -> str:
        return "pong"

    sig = inspect_tool(ping, name="ping")

    assert sig.args_schema == {"type": "object", "properties": {}, "additionalProperties": False}
    assert sig.is_async is True


def test_optional_literal_and_decimal_params() -> None:
    def refund(
        reason: Literal["damaged", "late"],
        amount: Decimal = Decimal("1.50"),
        note: str | None = None,
    ) -> None:
        """Refund."""

    props = inspect_tool(refund, name="refund").args_schema["properties"]

    assert props["reason"] == {"type": "string", "enum": ["damaged", "late"]}
    assert props["amount"]["default"] == "1.50"
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}


def test_pydantic_model_params_are_inlined_closed_and_untitled() -> None:
    def register(customer: Customer) -> None:
        """Register a customer."""

    schema = inspect_tool(register, name="register").args_schema
    customer = schema["properties"]["customer"]

    assert "$defs" not in schema
    assert "$ref" not in repr(schema)
    assert "title" not in repr(schema)
    assert customer["additionalProperties"] is False
    address = customer["properties"]["addresses"]["items"]
    assert address == {
        "type": "object",
        "description": "A postal address.",
        "properties": {
            "street": {"type": "string"},
            "city": {"type": "string", "default": "Paris"},
        },
        "required": ["street"],
        "additionalProperties": False,
    }


def test_nested_model_args_validate_into_model_instances() -> None:
    def register(customer: Customer) -> None:
        """Register a customer."""

    sig = inspect_tool(register, name="register")
    parsed = sig.args_model.model_validate(
        {"customer": {"name": "Ada", "addresses": [{"street": "1 Rue"}]}}
    )

    assert parsed.customer == Customer(name="Ada", addresses=[Address(street="1 Rue")])  # type: ignore[attr-defined]


def test_a_property_named_title_is_kept() -> None:
    def rename(title: str) -> None:
        """Rename."""

    assert inspect_tool(rename, name="rename").args_schema["properties"] == {
        "title": {"type": "string"}
    }


def test_ref_siblings_win_over_the_definition() -> None:
    def ship(to: Address) -> None:
        """Ship.

        Args:
            to: Where the parcel goes.
        """

    assert inspect_tool(ship, name="ship").args_schema["properties"]["to"]["description"] == (
        "Where the parcel goes."
    )


def test_docstring_args_descriptions_google_style() -> None:
    def refund(order_id: int, amount: float, reason: str = "n/a", quiet: bool = False) -> None:
        """Refund an order,
        in part or in full.

        Second paragraph, not part of the description.

        Args:
            order_id: The order's id.
            amount (float): How much to refund,
                in US dollars.
            reason:
                Why, in the customer's words.

        Returns:
            Nothing.
        """

    sig = inspect_tool(refund, name="refund")
    props = sig.args_schema["properties"]

    assert sig.description == "Refund an order, in part or in full."
    assert props["order_id"]["description"] == "The order's id."
    assert props["amount"]["description"] == "How much to refund, in US dollars."
    assert props["reason"]["description"] == "Why, in the customer's words."
    assert "description" not in props["quiet"]


def test_args_section_ends_at_the_next_section() -> None:
    def f(a: int) -> None:
        """Do f.

        Args:
            a: The a.

        Raises:
            b: Not a parameter.
        """

    sig = inspect_tool(f, name="f")

    assert sig.args_schema["properties"]["a"]["description"] == "The a."


def test_description_falls_back_to_the_name() -> None:
    def undocumented(a: int) -> None:
        pass

    def only_sections(a: int) -> None:
        """Args:
        a: The a.
        """

    assert inspect_tool(undocumented, name="undocumented").description == "undocumented"
    assert inspect_tool(only_sections, name="only_sections").description == "only_sections"


def test_field_defaults_and_annotated_constraints_are_kept() -> None:
    def page(
        size: Annotated[int, Field(ge=1, le=50)] = 10,
        offset: int = Field(default=0, ge=0),
    ) -> None:
        """Page.

        Args:
            size: Rows per page.
            offset: Rows to skip.
        """

    sig = inspect_tool(page, name="page")
    props = sig.args_schema["properties"]

    assert props["size"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "default": 10,
        "description": "Rows per page.",
    }
    assert props["offset"] == {
        "type": "integer",
        "minimum": 0,
        "default": 0,
        "description": "Rows to skip.",
    }
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        sig.args_model.model_validate({"size": 0})


def test_field_description_from_the_author_wins_and_their_field_is_not_changed() -> None:
    declared = Field(default=0, description="Declared.")

    def page(offset: int = declared) -> None:
        """Page.

        Args:
            offset: From the docstring.
        """

    plain: Any = Field(default=0)

    def other(offset: int = plain) -> None:
        """Other.

        Args:
            offset: Documented.
        """

    def annotated(offset: Annotated[int, Field(description="In the annotation.")] = 0) -> None:
        """Annotated.

        Args:
            offset: From the docstring.
        """

    assert inspect_tool(page, name="page").args_schema["properties"]["offset"]["description"] == (
        "Declared."
    )
    assert inspect_tool(other, name="other").args_schema["properties"]["offset"] == {
        "type": "integer",
        "default": 0,
        "description": "Documented.",
    }
    assert plain.description is None
    props = inspect_tool(annotated, name="annotated").args_schema["properties"]
    assert props["offset"]["description"] == "In the annotation."


def test_tool_context_param_is_excluded_and_recorded() -> None:
    async def refund(ctx: ToolContext, order_id: int) -> None:
        """Refund."""

    sig = inspect_tool(refund, name="refund")

    assert sig.context_param == "ctx"
    assert list(sig.args_schema["properties"]) == ["order_id"]
    assert sig.args_schema["required"] == ["order_id"]
    with pytest.raises(ValueError, match="Extra inputs"):
        sig.args_model.model_validate({"order_id": 1, "ctx": {}})


def test_two_tool_context_params_are_rejected() -> None:
    def f(a: ToolContext, b: ToolContext) -> None:
        pass

    with pytest.raises(ConfigError, match=r"tool 'f': parameters 'a' and 'b' both take"):
        inspect_tool(f, name="f")


def test_return_annotation_gives_adapter_and_schema() -> None:
    def orders(customer_id: int) -> list[OrderRow]:
        """Orders."""
        return []

    sig = inspect_tool(orders, name="orders")

    assert sig.return_adapter is not None
    assert sig.return_schema == {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "order_id": {"type": "integer"},
                "placed_at": {"type": "string", "format": "date-time"},
            },
            "required": ["order_id", "placed_at"],
            "additionalProperties": False,
        },
    }
    row = sig.return_adapter.validate_python([{"order_id": 1, "placed_at": "2026-01-01T00:00:00Z"}])
    assert row[0]["placed_at"].year == 2026


def test_none_return_annotation_gives_no_adapter() -> None:
    def f() -> None:
        pass

    def g():  # type: ignore[no-untyped-def]
        pass

    assert inspect_tool(f, name="f").return_adapter is None
    assert inspect_tool(g, name="g").return_schema is None


def test_recursive_return_type_keeps_refs_without_titles() -> None:
    def tree() -> Node:
        return Node(value=1)

    sig = inspect_tool(tree, name="tree")

    assert sig.return_schema is not None
    assert sig.return_schema["$ref"] == "#/$defs/Node"
    assert "title" not in repr(sig.return_schema)
    assert sig.return_adapter is not None
    assert sig.return_adapter.validate_python({"value": 1, "children": [{"value": 2}]}) == Node(
        value=1, children=[Node(value=2)]
    )


def test_recursive_param_type_is_rejected() -> None:
    def plant(root: Node) -> None:
        pass

    with pytest.raises(ConfigError, match=r"tool 'plant': the type Node refers to itself"):
        inspect_tool(plant, name="plant")


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda a, /: None, r"parameter 'a' is positional-only"),
        (lambda *args: None, r"parameter 'args': \*args and \*\*kwargs"),
        (lambda **kw: None, r"parameter 'kw': \*args and \*\*kwargs"),
        (lambda a: None, r"parameter 'a' has no type annotation"),
    ],
)
def test_rejected_signatures_name_tool_and_parameter(fn: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^tool 't', " + message):
        inspect_tool(fn, name="t")


def test_unannotated_param_among_annotated_ones() -> None:
    def f(a: int, b) -> None:  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(ConfigError, match=r"tool 'f', parameter 'b' has no type annotation"):
        inspect_tool(f, name="f")


@pytest.mark.parametrize("param", ["json", "schema", "model_dump", "_private"])
def test_param_names_that_clash_with_pydantic_are_rejected(param: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def f({param}: int) -> None: pass", namespace)

    with pytest.raises(ConfigError, match=rf"parameter '{param}': the name clashes"):
        inspect_tool(namespace["f"], name="f")


def test_param_type_pydantic_cannot_handle_is_rejected() -> None:
    def f(thing: Opaque) -> None:
        pass

    with pytest.raises(ConfigError, match=r"tool 'f': pydantic cannot validate its parameters"):
        inspect_tool(f, name="f")


def test_return_type_pydantic_cannot_handle_is_rejected() -> None:
    def f() -> Opaque:
        return Opaque()

    with pytest.raises(ConfigError, match=r"tool 'f': pydantic cannot validate its return type"):
        inspect_tool(f, name="f")


def test_default_that_cannot_be_shown_as_json_is_rejected() -> None:
    def f(when: Any = OPAQUE) -> None:
        pass

    with pytest.raises(ConfigError, match=r"tool 'f': its args cannot be described as JSON"):
        inspect_tool(f, name="f")


def test_unresolvable_annotation_is_a_config_error() -> None:
    def f(a: Undefined) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(ConfigError, match=r"tool 'f': cannot resolve its type annotations"):
        inspect_tool(f, name="f")


def test_generators_are_rejected() -> None:
    def gen():  # type: ignore[no-untyped-def]
        yield 1

    async def agen():  # type: ignore[no-untyped-def]
        yield 1

    for fn in (gen, agen):
        with pytest.raises(ConfigError, match="is a generator"):
            inspect_tool(fn, name="g")


def test_uninspectable_callable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot read the signature"):
        inspect_tool(max, name="max")


class AsyncCallable:
    """Count things."""

    async def __call__(self, n: int) -> int:
        return n


def test_callable_objects_and_partials() -> None:
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    obj = inspect_tool(AsyncCallable(), name="count")
    part = inspect_tool(functools.partial(add, b=2), name="add2")

    assert obj.is_async is True
    assert obj.description == "Count things."
    assert obj.args_schema["required"] == ["n"]
    assert part.is_async is False
    assert part.args_schema["required"] == ["a"]
    assert part.args_schema["properties"]["b"]["default"] == 2


def test_validate_args_through_a_spec_returns_keyword_arguments() -> None:
    from bastion.router.registry import make_tool

    def refund(ctx: ToolContext, order_id: int, amount: Decimal = Decimal(1)) -> None:
        """Refund."""

    spec = make_tool(refund)
    kwargs = spec.validate_args({"order_id": "7"})

    assert kwargs == {"order_id": 7, "amount": Decimal(1)}
    with pytest.raises(InvalidToolArgs, match="order_id"):
        spec.validate_args({})
    refund(
        ToolContext(
            run_id="r", step_id=0, attempt=1, principal=Principal(id="u"), idempotency_key="r:0"
        ),
        **kwargs,
    )


class Shop:
    def find(self, sku: str, ctx: ToolContext) -> int:
        """Find a product by SKU."""
        return len(sku)


def test_bound_methods_leave_self_out() -> None:
    sig = inspect_tool(Shop().find, name="find")

    assert sig.args_schema["required"] == ["sku"]
    assert list(sig.args_schema["properties"]) == ["sku"]
    assert sig.context_param == "ctx"
    assert sig.description == "Find a product by SKU."
