"""`ScriptedModel`: a deterministic `ChatModel` for tests and demos, strict about its script.

It answers from a script instead of a network, and fails loudly when the code under test asks for
more, or less, than the script holds (openai-agents `testing/model.py`): an unexpected call raises
`UnexpectedModelCall`, and `assert_consumed` fails on answers left unused. Two ways to script it:

* in sequence (`ScriptedModel(responses)`): each call consumes the next item;
* by match (`ScriptedModel.matching(rules)`): the first rule whose regex finds the last user
  message answers, any number of times (demos, where the order of calls is not the point).

Usage is a rough count (characters / 4, at least 1) rather than zero, so that cost accounting runs
for real in tests. `from_file` reads a script from JSON, for the CLI and the demo.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from bastion.errors import (
    ConfigError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
)
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse, Usage

#: One scripted answer: its text, a full response, an exception to raise, or a function of the
#: request returning either of the first two (it may also raise).
ScriptItem = str | ChatResponse | BaseException | Callable[[ChatRequest], str | ChatResponse]


class UnexpectedModelCall(AssertionError):
    """The code under test called the model when the script had no answer for it."""


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    reply: ScriptItem


class ScriptedModel(ChatModel):
    """A `ChatModel` that answers from a script and records every request in `calls`."""

    def __init__(self, responses: Iterable[ScriptItem], *, name: str = "scripted:test") -> None:
        """Script answers to be consumed in order, one per call."""
        self._name = name
        self._queue: deque[ScriptItem] = deque(responses)
        self._rules: tuple[_Rule, ...] | None = None
        #: Every request received, in order, including unexpected ones.
        self.calls: list[ChatRequest] = []

    @classmethod
    def matching(
        cls, rules: Iterable[tuple[str, ScriptItem]], *, name: str = "scripted:match"
    ) -> Self:
        """Answer each call with the first rule whose regex finds the last user message.

        Patterns are searched case-insensitively (`re.search`); rules are never used up.

        Raises:
            ConfigError: a pattern is not a valid regular expression.
        """
        model = cls((), name=name)
        model._rules = tuple(
            _Rule(_compile(pattern, where=f"rule #{number}"), reply)
            for number, (pattern, reply) in enumerate(rules, start=1)
        )
        return model

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Self:
        """Load a script from a JSON file (format: `ScriptFile`); named ``scripted:<path>``.

        Raises:
            ConfigError: the file cannot be read, is not JSON, or does not follow the format; the
                message names the file and the problem.
        """
        name = f"scripted:{os.fspath(path)}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read scripted model file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"scripted model file {path} is not UTF-8 text: {exc}") from exc
        where: tuple[str | int, ...] = ()
        try:
            spec = _SCRIPT_FILE.validate_json(text)
            if isinstance(spec, _SequenceFile):
                items: list[ScriptItem] = []
                for number, item in enumerate(spec.responses):
                    where = ("responses", number)
                    items.append(_sequence_item(item, name))
                return cls(items, name=name)
        except ValidationError as exc:
            problems = _problems(exc, where)
            raise ConfigError(f"invalid scripted model file {path}: {problems}") from exc
        return cls.matching(
            [(rule.when, _directive_item(rule, name)) for rule in spec.rules], name=name
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def remaining(self) -> int:
        """How many sequence items no call has consumed yet (0 in match mode)."""
        return len(self._queue)

    def assert_consumed(self) -> None:
        """Fail if scripted answers were left unused (match-mode rules are never used up).

        Raises:
            AssertionError: naming how many answers were left and the next one.
        """
        if self._queue:
            raise AssertionError(
                f"{self._name}: {len(self._queue)} scripted response(s) were never used;"
                f" the next was {_describe(self._queue[0])}. The code under test called the"
                " model fewer times than the script expects."
            )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer from the script; see the class docs.

        Raises:
            UnexpectedModelCall: the script has no answer for this call.
            BaseException: whatever exception the script holds for this call.
        """
        self.calls.append(request)
        item = self._next(request)
        if isinstance(item, BaseException):
            raise item
        answer = item if isinstance(item, str | ChatResponse) else item(request)
        if isinstance(answer, ChatResponse):
            return answer
        if isinstance(answer, str):
            return self._response(request, answer)
        raise TypeError(
            f"{self._name}: a scripted callable must return str or ChatResponse,"
            f" not {type(answer).__name__}"
        )

    def _next(self, request: ChatRequest) -> ScriptItem:
        number = len(self.calls)
        if self._rules is None:
            if self._queue:
                return self._queue.popleft()
            raise UnexpectedModelCall(
                f"unexpected call #{number} to {self._name}: all scripted responses are used."
                f" Last user message: {_last_user_message(request)!r}"
            )
        message = _last_user_message(request)
        for rule in self._rules:
            if rule.pattern.search(message):
                return rule.reply
        patterns = [rule.pattern.pattern for rule in self._rules]
        raise UnexpectedModelCall(
            f"unexpected call #{number} to {self._name}: no rule matches the last user message"
            f" {message!r}. Rules: {patterns}"
        )

    def _response(self, request: ChatRequest, text: str) -> ChatResponse:
        prompt_chars = sum(len(message.content) for message in request.messages)
        return ChatResponse(
            text=text,
            model=self._name,
            usage=Usage(
                input_tokens=_rough_tokens(prompt_chars), output_tokens=_rough_tokens(len(text))
            ),
        )


def _rough_tokens(chars: int) -> int:
    # About four characters a token in English: enough to make costs non-zero and plausible.
    return max(1, chars // 4)


def _last_user_message(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


def _describe(item: ScriptItem) -> str:
    if isinstance(item, str):
        return repr(item[:80])
    if isinstance(item, ChatResponse):
        return f"a ChatResponse {item.text[:80]!r}"
    if isinstance(item, BaseException):
        return f"an exception {item!r}"
    return f"a callable {getattr(item, '__name__', repr(item))}"


def _compile(pattern: str, *, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(
            f"{where}: {pattern!r} is not a valid regular expression ({exc})"
        ) from exc


# -- the JSON file format ----------------------------------------------------------------------

ErrorKind = Literal["rate_limited", "unavailable", "timeout", "bad_request", "refused"]

_ERRORS: dict[str, type[ModelError]] = {
    "rate_limited": ModelRateLimited,
    "unavailable": ModelUnavailable,
    "timeout": ModelTimeout,
    "bad_request": ModelBadRequest,
    "refused": ModelRefused,
}


class _Directive(BaseModel):
    """One answer in a file: ``{"reply": <str or object>}`` or ``{"error": <kind>, ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reply: str | dict[str, Any] | None = None
    error: ErrorKind | None = None
    retry_after_s: float | None = Field(default=None, ge=0)
    message: str | None = None

    @model_validator(mode="after")
    def _one_answer(self) -> Self:
        if (self.reply is None) == (self.error is None):
            raise ValueError("give exactly one of 'reply' and 'error'")
        if self.retry_after_s is not None and self.error != "rate_limited":
            raise ValueError("'retry_after_s' applies only to 'error': 'rate_limited'")
        if self.message is not None and self.error is None:
            raise ValueError("'message' applies only to an 'error'")
        return self


class _RuleSpec(_Directive):
    when: str

    @field_validator("when")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from exc
        return value


class _SequenceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["sequence"]
    responses: list[str | dict[str, Any]] = Field(min_length=1)


class _MatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["match"]
    rules: list[_RuleSpec] = Field(min_length=1)


#: ``{"mode": "sequence", "responses": [...]}`` or ``{"mode": "match", "rules": [...]}``.
#: A response is a string (the text), ``{"error": kind, "retry_after_s"?, "message"?}`` (raise
#: that `ModelError`), ``{"reply": str | object}``, or any other object, answered as its JSON text
#: (so plans are written as objects). A rule is ``{"when": regex, "reply": ...}`` or
#: ``{"when": regex, "error": ...}``.
ScriptFile = Annotated[_SequenceFile | _MatchFile, Field(discriminator="mode")]
_SCRIPT_FILE: TypeAdapter[_SequenceFile | _MatchFile] = TypeAdapter(ScriptFile)


def _sequence_item(value: str | dict[str, Any], name: str) -> ScriptItem:
    if isinstance(value, str):
        return value
    if "error" in value or set(value) == {"reply"}:
        return _directive_item(_Directive.model_validate(value), name)
    return json.dumps(value)


def _directive_item(directive: _Directive, name: str) -> ScriptItem:
    if directive.error is None:
        reply = directive.reply
        return reply if isinstance(reply, str) else json.dumps(reply)
    kind, retry_after_s = directive.error, directive.retry_after_s
    text = f"scripted {kind.replace('_', ' ')} error from {name}"
    if directive.message:
        text = f"{text}: {directive.message}"

    def raise_error(request: ChatRequest) -> NoReturn:
        # A fresh exception per call: one instance raised twice would pile up tracebacks.
        if kind == "rate_limited":
            raise ModelRateLimited(text, model=name, retry_after_s=retry_after_s)
        raise _ERRORS[kind](text, model=name)

    return raise_error


def _problems(exc: ValidationError, where: tuple[str | int, ...] = ()) -> str:
    def one(loc: tuple[str | int, ...], msg: str) -> str:
        return f"{'.'.join(str(part) for part in loc)}: {msg}" if loc else msg

    return "; ".join(one((*where, *error["loc"]), error["msg"]) for error in exc.errors())
