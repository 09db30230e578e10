"""Logging for the CLI: full detail to a file, one line per warning to stderr, never a traceback.

Tracebacks are for operators and go to ``<data_dir>/bastion.log``; a person at the terminal sees one
line saying what happened and where the details are.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bastion.gate.redact import RedactingFilter, Redactor

_CONFIGURED = "_bastion_cli_handler"


class _OneLine(logging.Formatter):
    """Formats a record as one line and drops its traceback."""

    def __init__(self, log_file: Path | None) -> None:
        super().__init__()
        self._hint = f" (details in {log_file})" if log_file else ""

    def format(self, record: logging.LogRecord) -> str:
        text = f"bastion: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += self._hint
        return text.splitlines()[0] if text else text


def configure_logging(
    data_dir: Path, *, level: int = logging.INFO, redactor: Redactor | None = None
) -> Path | None:
    """Send Bastion's logs to ``data_dir/bastion.log`` and warnings, one line each, to stderr.

    Both hide secrets (`redactor`, by default the patterns of `bastion.gate.redact.Redactor`).
    Returns the log file, or None when the data directory cannot be written (then only stderr).
    """
    root = logging.getLogger("bastion")
    for handler in list(root.handlers):
        if getattr(handler, _CONFIGURED, False):
            root.removeHandler(handler)
            handler.close()
    log_file: Path | None = data_dir / "bastion.log"
    try:
        assert log_file is not None
        data_dir.mkdir(parents=True, exist_ok=True)
        file_handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        file_handler.setLevel(level)
        file_handler.addFilter(RedactingFilter(redactor))
        setattr(file_handler, _CONFIGURED, True)
        root.addHandler(file_handler)
    except OSError:
        log_file = None
    stderr = logging.StreamHandler()
    stderr.setFormatter(_OneLine(log_file))
    stderr.setLevel(logging.WARNING)
    stderr.addFilter(RedactingFilter(redactor))
    setattr(stderr, _CONFIGURED, True)
    root.addHandler(stderr)
    root.setLevel(level)
    return log_file
