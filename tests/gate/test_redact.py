"""The redactor: secret-looking keys, declared fields, token shapes, card numbers, known values."""

from __future__ import annotations

import enum
import logging
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import NamedTuple

import pytest

from bastion.gate.redact import REDACTED, RedactingFilter, Redactor, looks_secret, luhn_valid

R = Redactor()


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "new_password",
        "passwd",
        "token",
        "access_token",
        "refreshToken",
        "secret",
        "client_secret",
        "clientSecret",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "APIKey",
        "authorization",
        "Authorization",
        "card_number",
        "cardNumber",
        "credit_card",
        "cvv",
        "private_key",
        "Cookie",
    ],
)
def test_secret_looking_keys(key):
    assert looks_secret(key)
    assert R.value({key: "x"}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    [
        "order_id",
        "max_tokens",
        "input_tokens",
        "amount",
        "secretary",
        "key",
        "api",
        "card",
        "reason",
    ],
)
def test_ordinary_keys_are_kept(key):
    assert not looks_secret(key)
    assert R.value({key: "x"}) == {key: "x"}


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("key sk-proj-abcdefghijklmnop1234 here", "sk-proj-abcdefghijklmnop1234"),
        ("ant sk-ant-api03-abcdefghijklmnopqrstuv", "sk-ant-api03-abcdefghijklmnopqrstuv"),
        ("bst_0123456789ab_" + "A_b-" * 11, "bst_0123456789ab_"),
        ("gh ghp_" + "a" * 36, "ghp_"),
        ("github_pat_" + "B" * 40, "github_pat_"),
        ("slack xoxb-1234567890-abcdef", "xoxb-1234567890-abcdef"),
        ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("stripe sk_live_" + "c" * 24, "sk_live_"),
        ("google AIza" + "d" * 35, "AIza"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijklmnop", "eyJhbGci"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
        ("header Authorization: Bearer abc.def.ghi123", "abc.def.ghi123"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("curl -H 'bearer zzzzyyyyxxxx'", "zzzzyyyyxxxx"),
        ("login failed: password=hunter2, user=bob", "hunter2"),
        ('{"api_key": "abcd1234", "x": 1}', "abcd1234"),
        ("client_secret: s3cr3t!", "s3cr3t!"),
        ("pay with 4111 1111 1111 1111 now", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111.", "4111-1111-1111-1111"),
        ("amex 378282246310005", "378282246310005"),
        ("mc 5555555555554444", "5555555555554444"),
    ],
)
def test_secrets_in_free_text_are_hidden(text, hidden):
    redacted = R.text(text)
    assert hidden not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "tracking JJD0099001234567 in Leipzig",
        "GLS6280019462 out for delivery",
        "UPS 1Z999AA10123456784",
        "card 4111-1111-1111-1112 fails the Luhn check",
        "timestamp 1767225600000 ms",
        "ratio 0.4111111111111111",
        "basic questions about tokens: 5",
        "the token expired",
        "run_0123456789abcdef0123 step 3",
        "order A1002 total 29.00 EUR",
        "max_tokens=1024",
        "password reset article",
    ],
)
def test_ordinary_text_is_kept(text):
    assert R.text(text) == text


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


def test_declared_secret_fields_are_hidden_ignoring_case_and_separators():
    redactor = Redactor(secret_fields=["pin_code", "IBAN"])
    assert redactor.value({"PinCode": 1234, "pin-code": "x", "iban": "DE00", "ok": 1}) == {
        "PinCode": REDACTED,
        "pin-code": REDACTED,
        "iban": REDACTED,
        "ok": 1,
    }
    assert Redactor(secret_fields=["", "--"]).value({"a": 1}) == {"a": 1}


def test_known_secrets_are_hidden_wherever_they_appear_longest_first():
    redactor = Redactor(known_secrets=["canary-1234567", "canary-1234567-long", "short"])
    assert redactor.text("x=canary-1234567-long;y=canary-1234567;z=short") == (
        f"x={REDACTED};y={REDACTED};z=short"
    )


def test_values_are_walked_to_any_depth_keeping_their_types():
    value = {
        "user": {"name": "Ada", "password": "x", "cards": [{"card_number": "4111"}]},
        "pair": ("sk-abcdefghijklmnopqrstu", 2.5),
        "card_as_int": 4111111111111111,
        "big_int": 1767225600000,
        "flag": True,
        "none": None,
        "amount": Decimal("1.5"),
    }
    assert R.value(value) == {
        "user": {"name": "Ada", "password": REDACTED, "cards": [{"card_number": REDACTED}]},
        "pair": [REDACTED, 2.5],
        "card_as_int": REDACTED,
        "big_int": 1767225600000,
        "flag": True,
        "none": None,
        "amount": Decimal("1.5"),
    }


def test_json_makes_plain_json_data_with_secrets_hidden():
    value = {
        "amount": Decimal("12.50"),
        "when": datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
        "naive": datetime(2026, 1, 1, 12, 0),  # noqa: DTZ001 - naive on purpose
        "tags": {"b", "a"},
        "pair": (1, 2.5),
        "token": {"nested": "hidden as a whole"},
        "other": object,
        "nan": float("nan"),
        "nul\x00key": "a\x00b",
        "text": "Bearer abcdefghijkl",
        "card": 4111111111111111,
    }
    assert R.json(value) == {
        "amount": "12.50",
        "when": "2026-01-01T12:00:00.000000Z",
        "naive": "2026-01-01T12:00:00",
        "tags": ["a", "b"],
        "pair": [1, 2.5],
        "token": REDACTED,
        "other": str(object),
        "nan": "nan",
        "nul\ufffdkey": "a\ufffdb",
        "text": f"Bearer {REDACTED}",
        "card": REDACTED,
    }
    assert R.json(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"


def test_json_treats_subclasses_of_the_json_types_as_those_types():
    class Point(NamedTuple):
        x: int
        card: int

    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    class Ratio(float):
        pass

    value = {
        "point": Point(1, 4111111111111111),
        "level": Level.HIGH,
        "name": Name("Bearer abcdefghijkl"),
        "ratio": Ratio("inf"),
        "mapping": MappingProxyType({"password": "x", "ok": [1]}),
        "frozen": frozenset({2, 1}),
    }
    assert R.json(value) == {
        "point": [1, REDACTED],
        "level": Level.HIGH,
        "name": f"Bearer {REDACTED}",
        "ratio": "inf",
        "mapping": {"password": REDACTED, "ok": [1]},
        "frozen": [1, 2],
    }


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("bastion.t", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_the_logging_filter_hides_secrets_in_message_args_and_traceback():
    secret = "sk-canary-abcdefghijklmnop"
    try:
        raise ValueError(f"upstream refused key {secret}")
    except ValueError as exc:
        record = _record("tool %s failed with %r", "lookup", {"api_key": secret}, exc=exc)
    log_filter = RedactingFilter()
    assert log_filter.filter(record) is True
    text = logging.Formatter().format(record)
    assert secret not in text
    assert "tool lookup failed" in text
    assert "ValueError: upstream refused key [redacted]" in text


def test_the_logging_filter_copes_with_a_bad_format_string_and_stack_info():
    record = _record("%d items with sk-abcdefghijklmnopqrstu", "not a number")
    record.stack_info = "Stack: password=hunter2"
    RedactingFilter(Redactor()).filter(record)
    assert "sk-abcdef" not in record.getMessage()
    assert "hunter2" not in record.stack_info


def test_the_logging_filter_on_a_handler_covers_child_loggers(caplog):
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    parent = logging.getLogger("bastion_test_parent")
    parent.addHandler(handler)
    try:
        logging.getLogger("bastion_test_parent.child").warning(
            "token %s", "sk-abcdefghijklmnopqrstu"
        )
    finally:
        parent.removeHandler(handler)
    assert seen == [f"token {REDACTED}"]


def test_declared_fields_quoted_in_free_text_are_hidden():
    redactor = Redactor(secret_fields=["iban", "pin_code"])
    assert redactor.text("bank refused iban=DE89370400440532013000 today") == (
        f"bank refused iban={REDACTED} today"
    )
    assert redactor.text('{"iban": "DE89 3704", "x": 1}') == f'{{"iban": "{REDACTED}", "x": 1}}'
    assert redactor.text("PIN_CODE: 1234;") == f"PIN_CODE: {REDACTED};"
    assert redactor.text("an iban is required") == "an iban is required"
    assert Redactor().text("iban=DE89370400440532013000") == "iban=DE89370400440532013000"


def test_a_value_with_nothing_to_hide_is_given_back_itself():
    """Callers (`bastion.gate.redacting`) skip copying a record when redacting changed nothing."""
    redactor = Redactor()
    clean = {"order": "A-1", "items": [{"sku": "x", "qty": 2}], "note": "ok"}
    assert redactor.value(clean) is clean
    text = "an ordinary sentence"
    assert redactor.value(text) is text
    # Anything hidden, or a shape that changes (a tuple becomes a list): a new value.
    secret = {"order": "A-1", "meta": {"api_key": "k"}}
    hidden = redactor.value(secret)
    assert hidden is not secret
    assert hidden["meta"] == {"api_key": REDACTED}
    assert secret["meta"] == {"api_key": "k"}  # the original untouched
    shaped = {"pair": (1, 2)}
    assert redactor.value(shaped) == {"pair": [1, 2]}
    assert redactor.value(shaped) is not shaped


def test_short_texts_are_cleaned_once_and_long_ones_every_time():
    redactor = Redactor(known_secrets=["hunter2-very-secret"])
    short = "pw hunter2-very-secret"
    assert redactor.text(short) == "pw [redacted]"
    assert redactor.text(short) == "pw [redacted]"  # from the cache: the same answer
    long = "x" * 500 + " hunter2-very-secret"
    assert redactor.text(long).endswith("[redacted]")
    assert Redactor().text(short) == short  # each redactor has its own cache and secrets
