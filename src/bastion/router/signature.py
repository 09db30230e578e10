"""What a tool's Python signature says: its args model, schemas, description and context parameter.

The planner shows these schemas to the model, often a small local one, and constrained decoding
follows them token by token. So the emitted JSON schema is kept small and plain: no pydantic
``title`` keys, ``$defs`` references inlined, ``additionalProperties: false`` on every object
with declared properties. Everything here happens once, when a tool is registered; a signature
Bastion cannot call by keyword, or cannot describe as JSON, is a `ConfigError` naming the tool and
the parameter, never a surprise mid-run.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError
from pydantic.fields import FieldInfo
from pydantic.json_schema import PydanticJsonSchemaWarning

from bastion.errors import ConfigError
from bastion.router.interface import ToolContext

# Google docstring sections that end the summary paragraph and the ``Args:`` block.
_ARGS_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments):\s*$")
_ANY_HEADER = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_ARG_LINE = re.compile(r"^\s*\**(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
# Schema keywords whose values are schemas (or maps / lists of schemas), for the schema walkers.
_SUBSCHEMA = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "patternProperties")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSignature:
    """Everything `ToolSpec` needs that is read off the callable itself."""

    description: str
    args_model: type[BaseModel]
    args_schema: Mapping[str, Any]
    is_async: bool
    context_param: str | None
    return_adapter: TypeAdapter[Any] | None
    return_schema: Mapping[str, Any] | None


def inspect_tool(fn: Callable[..., Any], *, name: str) -> ToolSignature:
    """Read `fn`'s signature and docstring into the parts of a `ToolSpec`.

    Args:
        fn: A sync or async callable whose parameters are all annotated and keyword-callable.
        name: The tool's name, used in the args model's name and in error messages.

    Raises:
        ConfigError: a parameter is unannotated, variadic, positional-only, named like a pydantic
            attribute, or of a type pydantic cannot validate or describe as JSON; the
            annotations cannot be resolved; or `fn` is a generator.
    """
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigError(
            f"tool {name!r} is a generator; a tool must return its whole result (e.g. a list)"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool {name!r}: cannot read the signature of {fn!r}: {exc}") from exc
    hints = _type_hints(fn, name)
    param_docs = _arg_descriptions(inspect.getdoc(fn) or "")
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in signature.parameters.values():
        annotation = _check_parameter(param, hints, name)
        if annotation is ToolContext:
            if context_param is not None:
                raise ConfigError(
                    f"tool {name!r}: parameters {context_param!r} and {param.name!r} both take a "
                    "ToolContext; declare at most one"
                )
            context_param = param.name
            continue
        fields[param.name] = _field(param, annotation, param_docs.get(param.name))
    args_model = _args_model(name, fields)
    return_adapter, return_schema = _return_type(hints, name)
    return ToolSignature(
        description=_summary(inspect.getdoc(fn) or "") or name,
        args_model=args_model,
        args_schema=_args_schema(args_model, name),
        is_async=_is_async(fn),
        context_param=context_param,
        return_adapter=return_adapter,
        return_schema=return_schema,
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    # A callable object with ``async def __call__`` is async too; `iscoroutinefunction` alone
    # looks only at functions, methods and partials.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - we want __call__ itself, not callable()
    )


def _type_hints(fn: Callable[..., Any], name: str) -> dict[str, Any]:
    target: Any = fn
    while isinstance(target, partial):
        target = target.func
    if not (inspect.isfunction(target) or inspect.ismethod(target)) and callable(target):
        target = type(target).__call__
    try:
        return get_type_hints(target, include_extras=True)
    except Exception as exc:  # NameError, TypeError: whatever an annotation's evaluation raised
        raise ConfigError(
            f"tool {name!r}: cannot resolve its type annotations ({type(exc).__name__}: {exc}); "
            "define every type the signature names at module level"
        ) from exc


def _check_parameter(param: inspect.Parameter, hints: Mapping[str, Any], name: str) -> Any:
    where = f"tool {name!r}, parameter {param.name!r}"
    if param.kind is inspect.Parameter.POSITIONAL_ONLY:
        raise ConfigError(f"{where} is positional-only; tools are called with keyword arguments")
    if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        raise ConfigError(f"{where}: *args and **kwargs cannot be described to the model")
    if param.name not in hints:
        raise ConfigError(f"{where} has no type annotation; annotate it so its args can be checked")
    if param.name.startswith("_") or hasattr(BaseModel, param.name):
        raise ConfigError(
            f"{where}: the name clashes with a pydantic BaseModel attribute or is private; "
            "rename the parameter"
        )
    return hints[param.name]


def _field(param: inspect.Parameter, annotation: Any, doc: str | None) -> tuple[Any, Any]:
    """A ``create_model`` field definition: the docstring's words unless the author gave some."""
    default = ... if param.default is inspect.Parameter.empty else param.default
    if doc and not _declares_description(annotation, default):
        # Added as metadata, so a ``Field(...)`` default (constraints, factory) stays as written.
        annotation = Annotated[annotation, Field(description=doc)]
    return annotation, default


def _declares_description(annotation: Any, default: Any) -> bool:
    declared = [default]
    if get_origin(annotation) is Annotated:
        declared.extend(annotation.__metadata__)
    return any(isinstance(d, FieldInfo) and d.description is not None for d in declared)


def _args_model(name: str, fields: dict[str, Any]) -> type[BaseModel]:
    try:
        return create_model(
            f"{name}_args",
            __config__=ConfigDict(extra="forbid", protected_namespaces=()),
            **fields,
        )
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
        raise ConfigError(
            f"tool {name!r}: pydantic cannot validate its parameters: {exc}; use JSON-friendly "
            "types (str, int, float, bool, Decimal, datetime, Literal, lists, dicts, models)"
        ) from exc


def _args_schema(args_model: type[BaseModel], name: str) -> dict[str, Any]:
    try:
        return _plain_schema(_json_schema(args_model.model_json_schema, name, "args"))
    except _RecursiveSchemaError as exc:
        raise ConfigError(
            f"tool {name!r}: the type {exc} refers to itself, so its args schema would be "
            "infinite once inlined; use a non-recursive type for the parameters"
        ) from exc


def _return_type(
    hints: Mapping[str, Any], name: str
) -> tuple[TypeAdapter[Any] | None, Mapping[str, Any] | None]:
    annotation = hints.get("return", None)
    if annotation is None or annotation is type(None):
        return None, None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
        raise ConfigError(
            f"tool {name!r}: pydantic cannot validate its return type {annotation!r}: {exc}"
        ) from exc
    schema = _json_schema(adapter.json_schema, name, "return value")
    try:
        return adapter, _plain_schema(schema)
    except _RecursiveSchemaError:
        # A tree-shaped result is legitimate; only the args schema, which a model must follow,
        # has to be finite. Keep the references, drop the titles.
        return adapter, _strip(schema, inline=None)


def _json_schema(make: Callable[[], dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            # pydantic only warns when it must leave a default out of the schema; the model
            # would then never learn the default, so this is an error at registration.
            warnings.simplefilter("error", PydanticJsonSchemaWarning)
            return make()
    except (PydanticJsonSchemaWarning, PydanticUserError) as exc:
        raise ConfigError(f"tool {name!r}: its {what} cannot be described as JSON: {exc}") from exc


class _RecursiveSchemaError(Exception):
    pass


def _plain_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without ``title`` keys and with every ``$ref`` inlined."""
    plain: dict[str, Any] = _strip(schema, inline=schema.get("$defs", {}))
    return plain


def _strip(node: Any, *, inline: Mapping[str, Any] | None, seen: tuple[str, ...] = ()) -> Any:
    """Copy a schema node, dropping titles and (when `inline` is given) resolving refs."""
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if inline is not None and isinstance(ref, str) and ref.startswith("#/$defs/"):
        key = ref.removeprefix("#/$defs/")
        if key in seen:
            raise _RecursiveSchemaError(key)
        # Sibling keys (a field's description, its default) win over the referenced definition.
        merged = {**inline[key], **{k: v for k, v in node.items() if k != "$ref"}}
        return _strip(merged, inline=inline, seen=(*seen, key))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SUBSCHEMA:
            out[key] = _strip(value, inline=inline, seen=seen)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_strip(item, inline=inline, seen=seen) for item in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            if key == "$defs" and inline is not None:
                continue
            out[key] = {k: _strip(v, inline=inline, seen=seen) for k, v in value.items()}
        else:
            out[key] = value
    # Extra keys in a nested object are ignored by pydantic anyway; saying so keeps constrained
    # decoders (and small models) from inventing them.
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _summary(doc: str) -> str:
    """The docstring's first paragraph, on one line."""
    lines: list[str] = []
    for line in doc.splitlines():
        if _ANY_HEADER.match(line) or (lines and not line.strip()):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)


def _arg_descriptions(doc: str) -> dict[str, str]:
    """Per-parameter descriptions from a Google-style ``Args:`` section."""
    found: dict[str, list[str]] = {}
    header_indent: int | None = None
    entry_indent: int | None = None
    current: list[str] | None = None
    for line in doc.splitlines():
        if header_indent is None:
            match = _ARGS_HEADER.match(line)
            if match:
                header_indent = len(match.group(1))
            continue
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:
            break  # the next section
        if entry_indent is None:
            entry_indent = indent
        arg = _ARG_LINE.match(line) if indent == entry_indent else None
        if arg:
            current = found.setdefault(arg.group(1), [])
            if arg.group(2).strip():
                current.append(arg.group(2).strip())
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(words) for name, words in found.items() if words}
