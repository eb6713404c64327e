"""Text that is safe to store and to show on a terminal.

One character set for both: C0 controls except tab and newline (ESC starts sequences
that retitle, clear or rewrite a terminal; CR overwrites a line; BEL rings), DEL, C1
controls, and the bidirectional overrides and isolates that make text read reversed
(U+202E, "Trojan Source"). Names, keys, params and tags refuse them when stored; the
CLI shows any that an older record holds as escapes.
"""

from __future__ import annotations

import re

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def is_safe(text: str) -> bool:
    return UNSAFE.search(text) is None


def escape_controls(text: str) -> str:
    """``text`` with every unsafe character shown as an escape (``\\x1b``, ``\\u202e``)."""
    if UNSAFE.search(text) is None:
        return text
    return UNSAFE.sub(lambda m: ascii(m[0])[1:-1], text)
