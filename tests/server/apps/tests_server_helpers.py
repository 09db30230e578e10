"""Reading a Server-Sent Events stream in tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx


def read_sse(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The events of an SSE response (comments and pings skipped), as {id, event, data}."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        event[field] = value[1:] if value.startswith(" ") else value
