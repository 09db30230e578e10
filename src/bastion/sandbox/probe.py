"""`echo`: the trivial tool that ``bastion doctor`` and ``bench/sandbox.py`` run on every tier.

Standard library only (nothing at all, in fact), so that a worker importing it pays for the
interpreter and nothing else: what is measured is the tier's own overhead.
"""

from __future__ import annotations


def echo(value: int) -> int:
    """Return `value` unchanged.

    Args:
        value: Any integer.
    """
    return value
