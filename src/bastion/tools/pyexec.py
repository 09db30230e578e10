"""`run_python`'s body: execute a snippet of Python and hand back what it printed, set and wrote.

This is the function the sandbox child calls, inside the ``os`` tier: no network, no host files,
a private workspace as the working directory, and the call's limits. It is kept to the standard
library (plus ``annotated_types``, a few kilobytes) so that a warm worker imports it in
milliseconds; the `ToolSpec` around it lives in `bastion.tools.python`.

What the snippet's errors become: an exception it raises ends the call as ``tool_error`` with the
line it happened on (the model can fix its code); running out of memory, CPU, processes or
workspace space ends it as ``resource_exhausted``; touching what the sandbox forbids (a host
file, the network, a link in the workspace) as ``denied``.
"""

from __future__ import annotations

import io
import json
import traceback
from contextlib import redirect_stderr, redirect_stdout
from typing import Annotated, Any

from annotated_types import MaxLen, MinLen
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from bastion.sandbox.workspace import collect_files, write_files

#: Characters of stdout (and of stderr) a result carries; more ends the call.
MAX_OUTPUT_CHARS = 64_000
#: Workspace files a result carries, and their total size.
MAX_RESULT_FILES = 20
MAX_RESULT_FILE_BYTES = 256 * 1024

Code = Annotated[str, MinLen(1), MaxLen(20_000)]
Files = Annotated[dict[str, str], MaxLen(20)]


class PythonResult(TypedDict):
    """What a `run_python` call gives back."""

    #: What the code printed.
    stdout: str
    stderr: str
    #: The value of the variable ``result`` when the code set one (JSON), else None.
    result: Any
    #: Text files the code created or changed in the workspace, by relative path.
    files: dict[str, str]
    #: Workspace files not returned, and why (binary, too large, too many).
    skipped_files: dict[str, str]


class OutputTooLarge(Exception):
    """The code printed more than `MAX_OUTPUT_CHARS`."""


class CodeError(Exception):
    """The code raised: the message names the line and the original error."""


class _Capped(io.StringIO):
    def write(self, text: str) -> int:
        if self.tell() + len(text) > MAX_OUTPUT_CHARS:
            raise OutputTooLarge(f"the code printed more than {MAX_OUTPUT_CHARS} characters")
        return super().write(text)


def run_python(code: Code, files: Files | None = None) -> PythonResult:
    r"""Run Python 3 code in an isolated sandbox (no network, no host files) and return its output.

    Use it to compute things exactly (money, dates, statistics) rather than guessing. Print what
    you need, or assign it to a variable named ``result``. The standard library is available
    (``decimal``, ``fractions``, ``statistics``, ``datetime``, ``json``, ``csv``, ``math``).

    Args:
        code: The program, e.g. "from decimal import Decimal\nprint(Decimal('59.90') / 3)".
        files: Text files to put in the working directory first, by relative path, e.g.
            {"items.csv": "sku,price\nA,10.00\n"}.
    """
    inputs = dict(files or {})
    write_files(inputs)
    stdout, stderr = _Capped(), _Capped()
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        compiled = compile(code, "<run_python>", "exec")
        with redirect_stdout(stdout), redirect_stderr(stderr):
            exec(compiled, namespace)
    except (OSError, MemoryError, OutputTooLarge):
        raise  # the sandbox's limits and refusals: classified by the runtime as they are
    except SyntaxError as exc:
        raise CodeError(f"line {exc.lineno}: SyntaxError: {exc.msg}") from None
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise CodeError(f"the code called sys.exit({exc.code!r})") from None
    except BaseException as exc:
        raise CodeError(f"{_where(exc)}{type(exc).__name__}: {exc}") from exc
    written, skipped = collect_files(
        max_files=MAX_RESULT_FILES, max_bytes=MAX_RESULT_FILE_BYTES, unchanged=inputs
    )
    return PythonResult(
        stdout=stdout.getvalue(),
        stderr=stderr.getvalue(),
        result=_json_or_repr(namespace.get("result")),
        files=written,
        skipped_files=skipped,
    )


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [frame.lineno for frame in frames if frame.filename == "<run_python>"]
    return f"line {lines[-1]}: " if lines else ""


def _json_or_repr(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)[:MAX_OUTPUT_CHARS]
    return value
