"""One redactor for everything that leaves a run: audit entries, stored runs, logs, answers.

Secrets reach a run from many sides (a user pastes a card number, a tool returns an API key, an
exception message quotes a bearer token), and every place that keeps or shows text must hide them
the same way, so that a secret hidden in the audit log cannot be read in the run store or the log
file. `Redactor` is that one place. It hides:

* values under keys that name secrets: ``password``, ``access_token``, ``clientSecret``,
  ``X-Api-Key``, ``card_number``, ... (matched on the key's words, so ``max_tokens`` and
  ``secretary`` stay readable), plus the fields an app declares secret (``secret_fields``);
* in any text: API keys and tokens by their shapes (Bastion's own ``bst_`` keys, ``sk-...``,
  GitHub, Slack, AWS, Stripe and Google keys, JWTs, PEM private keys), ``Bearer``/``Authorization``
  credentials, ``password=...``-style pairs, and payment card numbers (13 to 19 digits, spaces or
  dashes allowed, that pass the Luhn check);
* in any text: the exact values it was told are secret (``known_secrets``: the server secret, a
  provider's API key), however they are embedded.

What it cannot see, stated plainly: a secret that has none of these shapes, in free text, outside a
declared field (a password mentioned in a sentence). Declare such fields; patterns are a net, not
a proof.

`RedactingFilter` applies a redactor to log records (message, arguments and traceback) on the
handlers it is added to.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

#: What a secret is replaced with.
REDACTED = "[redacted]"

# Matched against a key's words and adjacent word pairs ("api_key" → "api", "key", "apikey"), not
# against substrings, so that "max_tokens" or "secretary" stay readable while "access_token",
# "clientSecret", "X-Api-Key" and "card_number" are hidden.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "token",
        "secret",
        "authorization",
        "apikey",
        "cardnumber",
        "creditcard",
        "cvv",
        "cvc",
        "pin",
        "privatekey",
        "cookie",
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")

# Credentials recognised by their shape, wherever they appear in a text.
_TOKEN_SHAPES = (
    r"\bbst_[0-9a-f]{12}_[A-Za-z0-9_\-]{16,}",  # Bastion API keys (bastion.gate.keys)
    r"\bsk-[A-Za-z0-9_\-]{16,}",  # OpenAI, Anthropic and alike: sk-..., sk-proj-..., sk-ant-...
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{30,}",
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"\bAIza[0-9A-Za-z_\-]{35}",  # Google API keys
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
    r"\b(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}",
)
_TOKENS = re.compile("|".join(f"(?:{shape})" for shape in _TOKEN_SHAPES))
# "Authorization: Basic abc", "password=hunter2", '"api_key": "abc"': keep the name, hide the value.
_PAIR_TAIL = (
    r"(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|(?:(?:basic|bearer|digest|token)\s+)?[^\s,;&\"'}\]\[][^\s,;&\"'}\]]*)"
)
_PAIRS = re.compile(
    r"(?i)\b(authorization|proxy-authorization|password|passwd|passphrase|pwd|secret|"
    r"client[_-]?secret|api[_-]?key|access[_-]?key|access[_-]?token|auth[_-]?token|"
    r"refresh[_-]?token|token)" + _PAIR_TAIL
)
# A run of 13 to 19 digits (spaces or single dashes between them), starting like a card number
# (2 to 6: Mastercard, Visa, Amex, Discover, JCB, UnionPay, ...), not glued to other digits,
# letters or a decimal point: tracking numbers such as "JJD0099001234567" are not cards.
_CARD = re.compile(r"(?<![\w.])[2-6](?:[ \-]?\d){12,18}(?![\w]|\.\d)")
_MIN_KNOWN_SECRET_CHARS = 8
#: `Redactor.text` remembers its answers for texts up to this long, this many of them (a few
#: hundred KiB at most): the short strings of a run's records repeat from step to step.
_CACHED_TEXT_CHARS = 128
_CACHED_TEXTS = 2048


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (every payment card number does)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


@functools.lru_cache(maxsize=4096)  # keys repeat (a run's records use a few dozen names)
def looks_secret(key: str) -> bool:
    """Whether a mapping key names something that must not be shown (``api_key``, ...)."""
    words = [w.lower() for w in _WORD.findall(key)]
    pairs = (a + b for a, b in itertools.pairwise(words))
    return any(w in _SECRET_WORDS for w in words) or any(p in _SECRET_WORDS for p in pairs)


@functools.lru_cache(maxsize=4096)
def _normal_key(key: str) -> str:
    return _NOT_ALNUM.sub("", key.lower())


class Redactor:
    """Hides secrets in texts and in JSON-like values; see the module docstring for what.

    Safe to share between tasks and threads: its only mutable state is a bounded cache of the
    short texts it has already cleaned (the same answer every time: the patterns never change).

    Args:
        secret_fields: names of fields the app declares secret (``"iban"``, ``"pin_code"``);
            matched ignoring case, ``_`` and ``-``, in addition to the secret-looking names.
        known_secrets: exact values to hide wherever they appear (shorter than 8 characters are
            ignored: hiding ``"1234"`` everywhere would garble ordinary text, not protect it).
    """

    def __init__(
        self, *, secret_fields: Iterable[str] = (), known_secrets: Iterable[str] = ()
    ) -> None:
        self._fields = frozenset(_normal_key(f) for f in secret_fields if _normal_key(f))
        # "iban=DE00..." or '"iban": "DE00..."' in a text: a declared field quoted in an error.
        names = sorted({f.strip() for f in secret_fields if _normal_key(f)}, key=len, reverse=True)
        self._declared_pairs = (
            re.compile(rf"(?i)\b({'|'.join(re.escape(n) for n in names)})" + _PAIR_TAIL)
            if names
            else None
        )
        # Longest first, so a secret that contains another is hidden whole.
        known = {s for s in known_secrets if len(s) >= _MIN_KNOWN_SECRET_CHARS}
        self._known = (
            re.compile("|".join(re.escape(s) for s in sorted(known, key=len, reverse=True)))
            if known
            else None
        )
        self._short_text = functools.lru_cache(maxsize=_CACHED_TEXTS)(self._clean_text)
        # Keys are few (field names): each is judged once.
        self._secret_key = functools.lru_cache(maxsize=_CACHED_TEXTS)(self._judge_key)

    def is_secret_key(self, key: str) -> bool:
        """Whether the value under `key` is hidden whole."""
        if len(key) > _CACHED_TEXT_CHARS:
            return self._judge_key(key)
        return self._secret_key(key)

    def _judge_key(self, key: str) -> bool:
        return looks_secret(key) or _normal_key(key) in self._fields

    def text(self, text: str) -> str:
        """`text` with every secret it contains replaced by ``[redacted]``."""
        if len(text) <= _CACHED_TEXT_CHARS:  # names, kinds, statuses: cleaned once
            return self._short_text(text)
        return self._clean_text(text)

    def _clean_text(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        text = _PAIRS.sub(_pair_replacement, text)
        if self._declared_pairs is not None:
            text = self._declared_pairs.sub(_pair_replacement, text)
        text = _TOKENS.sub(_token_replacement, text)
        return _CARD.sub(_card_replacement, text)

    def value(self, value: Any) -> Any:
        """`value` with secrets hidden: strings scanned, values under secret keys replaced whole.

        Mappings become dicts and tuples lists (the JSON shapes); every other type is kept as it
        is, except an integer that is a card number, which becomes ``[redacted]``. Where nothing
        changes (no secret, already a plain dict, list or str), `value` itself is returned, not a
        copy: callers tell "nothing to hide" by identity.
        """
        if isinstance(value, str):
            text = self.text(value)
            return value if text == value else text
        if isinstance(value, Mapping):
            cleaned = {
                k: REDACTED if isinstance(k, str) and self.is_secret_key(k) else self.value(v)
                for k, v in value.items()
            }
            if type(value) is dict and all(cleaned[k] is v for k, v in value.items()):
                return value
            return cleaned
        if isinstance(value, (list, tuple)):
            items = [self.value(v) for v in value]
            if type(value) is list and all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return items
        if isinstance(value, int) and not isinstance(value, bool) and value > 10**12:
            digits = str(value)
            if _CARD.fullmatch(digits) and luhn_valid(digits):
                return REDACTED
        return value

    def _json_mapping(self, value: Mapping[Any, Any]) -> dict[str, Any]:
        return {
            clean(str(k)): REDACTED if self.is_secret_key(str(k)) else self.json(v)
            for k, v in value.items()
        }

    def json(self, value: Any) -> Any:
        """`value` as plain JSON data (as `value` does, plus conversions), secrets hidden.

        A `Decimal` becomes its exact string, an aware datetime its UTC ISO form, a set a sorted
        list, a non-finite float its string, anything else JSON cannot hold its ``str``; NUL
        characters (which PostgreSQL cannot store) become U+FFFD.
        """
        kind = type(value)  # the plain JSON types first, by exact type (the common case)
        if kind is str:
            return clean(self.text(value))
        if kind is dict:
            return self._json_mapping(value)
        if kind is list or kind is tuple:
            return [self.json(v) for v in value]
        if value is None or kind is bool:
            return value
        if kind is int:
            return self.value(value) if value > 10**12 else value  # a card number, perhaps
        if kind is float:
            return value if math.isfinite(value) else str(value)
        if isinstance(value, Mapping):
            return self._json_mapping(value)
        return self._json_other(value)

    def _json_other(self, value: Any) -> Any:
        """`json` of what is not plainly one of JSON's types (subclasses, sets, decimals, ...)."""
        if isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
            return [self.json(v) for v in items]
        if isinstance(value, str):
            return clean(self.text(value))
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, (int, bool)):
            return self.value(value)
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                return value.isoformat()
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return clean(self.text(str(value)))


def clean(text: str) -> str:
    """`text` without NUL characters (PostgreSQL stores none in text, nor should a log line)."""
    return text.replace("\x00", "\ufffd")


def _token_replacement(match: re.Match[str]) -> str:
    found = match.group(0)
    if found[:6].lower() == "bearer":
        return f"{found[:6]} {REDACTED}"
    return REDACTED


def _pair_replacement(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.strip("\"'") == REDACTED:
        return match.group(0)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{match.group('sep')}{quote}{REDACTED}{quote}"


def _card_replacement(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = found.replace(" ", "").replace("-", "")
    return REDACTED if 13 <= len(digits) <= 19 and luhn_valid(digits) else found


class RedactingFilter(logging.Filter):
    """A logging filter that hides secrets in a record's message, arguments and traceback.

    Add it to handlers (``handler.addFilter(RedactingFilter())``), not to loggers: a logger's
    filters do not see the records its children propagate. It never drops a record.

    Args:
        redactor: what to hide; the default hides what `Redactor()` hides.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor or Redactor()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, hidden all the same
            message = f"{record.msg} {record.args}"
        record.msg = redactor.text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.text(record.stack_info)
        return True
