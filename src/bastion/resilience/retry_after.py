"""Reading a provider's "come back later" hint out of response headers, once, as seconds.

Providers say it three ways: ``retry-after-ms`` (OpenAI's, in milliseconds), ``retry-after`` in
seconds, and ``retry-after`` as an HTTP-date (RFC 9110 §10.2.3). Each provider adapter parses the
hint here at its error boundary and carries it on `bastion.errors.ModelRateLimited.retry_after_s`,
so the Recovery Handler's backoff never sees a header. Pure: the current time is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def parse_retry_after(headers: Mapping[str, str], *, now: datetime) -> float | None:
    """The delay a provider asked for, in seconds, or None when it asked for none we can read.

    ``retry-after-ms`` wins over ``retry-after`` when both are readable, being the more precise.
    Header names are matched case-insensitively. A delay in the past or a negative one is 0.

    Args:
        headers: The response headers (any mapping; `httpx.Headers` works as is).
        now: The current wall-clock time (aware), against which an HTTP-date is measured.

    Returns:
        The delay in seconds (at least 0), or None if no header is present or none parses.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = _number(lowered.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return max(0.0, seconds)
    return _http_date_delay(raw, now=now)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    # "nan" and "inf" parse as floats but are no delay anyone meant.
    return value if math.isfinite(value) else None


def _http_date_delay(raw: str, *, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 5322 "-0000" means "UTC, source zone unknown"; HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
