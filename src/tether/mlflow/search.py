"""MLflow's ``search_runs`` filter and ``order_by`` in tether's run filter grammar.

The two grammars share ``metrics.KEY``, ``params.KEY``, ``tags.KEY``, comparisons,
``and``/``or``, quotes and backticks; MLflow adds attributes (``attributes.status``,
``run_name``, ``start_time`` in milliseconds, …) and upper-case statuses. Those are
rewritten token by token; the result is parsed (and refused, with its position) by
``repositories.run_filter`` like any filter a user types.
"""

from __future__ import annotations

from tether.errors import FilterError
from tether.repositories.run_filter import tokenize

# MLflow attribute → (tether attribute, how its values read)
_ATTRIBUTES = {
    "run_id": ("id", "text"),
    "run_name": ("name", "text"),
    "status": ("status", "status"),
    "user_id": ("user", "text"),
    "start_time": ("started", "millis"),
    "end_time": ("ended", "millis"),
    "created": ("started", "millis"),
    "Created": ("started", "millis"),
}
STATUS_IN = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "finished",
             "FAILED": "failed", "KILLED": "killed"}  # fmt: skip


def _attribute(text: str) -> tuple[str, str] | None:
    name = text.split(".", 1)[1] if text.startswith(("attributes.", "attribute.", "attr.",
                                                     "run.")) else text  # fmt: skip
    return _ATTRIBUTES.get(name)


def translate_filter(text: str) -> str:
    """An MLflow filter as a tether filter (empty stays empty)."""
    out: list[str] = []
    pending: str | None = None  # how the next value reads: after an attribute
    for tok in tokenize(text):
        if tok.kind == "end":
            break
        if tok.kind in ("dotted", "word") and (found := _attribute(tok.text)):
            out.append(found[0])
            pending = found[1]
            continue
        if tok.kind == "word" and tok.text.lower() == "ilike":
            out.append("like")  # tether's like ignores case on both engines
            continue
        if tok.kind == "string" and pending == "status":
            status = STATUS_IN.get(tok.text[1:-1].upper())
            if status is None:
                raise FilterError(
                    f"{tok.text} is not a run status",
                    hint="statuses: " + ", ".join(STATUS_IN),
                )
            out.append(f"'{status}'")
            continue
        if tok.kind == "number" and pending == "millis":
            out.append(repr(float(tok.text) / 1000))
            continue
        if tok.kind == "word" and tok.text.lower() in ("and", "or"):
            pending = None
        out.append(tok.text)
    return " ".join(out)


def translate_order(order_by: list[str]) -> str | None:
    """The first ``order_by`` term as a tether sort ("KEY asc|desc"); None without one.
    (tether sorts by one key; later MLflow terms only break ties, and ties keep the
    newest first.)"""
    if not order_by:
        return None
    words = order_by[0].split()
    if not words or len(words) > 2:
        raise FilterError(f"cannot order by {order_by[0][:60]!r}", hint="KEY [ASC|DESC]")
    direction = words[1].lower() if len(words) == 2 else "asc"
    if direction not in ("asc", "desc"):
        raise FilterError(f"cannot order by {order_by[0][:60]!r}", hint="KEY [ASC|DESC]")
    key = words[0]
    found = _attribute(key)
    return f"{found[0] if found else key} {direction}"
