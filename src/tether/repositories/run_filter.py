"""``runs list --filter EXPR --sort KEY``: a small query language compiled to SQL with
bound parameters. User text never becomes SQL text: keys and values are always ``?``.

Grammar (keywords are case-insensitive)::

    expr       := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" expr ")" | comparison
    comparison := FIELD OP VALUE
                | FIELD ["not"] "in" "(" VALUE ("," VALUE)* ")"
                | FIELD ["not"] "like" STRING
                | FIELD "is" ["not"] "null"
    FIELD      := ("metrics" | "params" | "tags") "." KEY | ATTRIBUTE
    KEY        := [A-Za-z0-9_./:-]+ | `any text`
    OP         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    VALUE      := 'text' | "text" | NUMBER

Metrics compare their last value (highest step). Params and tags compare as text
against a quoted value and as numbers against a number (``params.k = 50`` matches
"50" and "50.0"). Time attributes take an ISO date/time or a relative ``'-7d'``
(s, m, h, d, w).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime

from tether.db.connection import Database, Dialect, Instant
from tether.db.sqlite import DIALECT as SQLITE
from tether.errors import FilterError
from tether.repositories.runs import load_runs
from tether.runs.record import STATUSES, RunRecord

MAX_LENGTH = 10_000
MAX_DEPTH = 50
MAX_COMPARISONS = 200

# attribute -> (SQL expression over runs r, kind); "seconds:" and "json:" expressions are
# the dialect's (see attribute_sql).
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "id": ("r.id", "text"),
    "name": ("r.name", "text"),
    "status": ("r.status", "status"),
    "user": ('r."user"', "text"),
    "host": ("r.host", "text"),
    "seed": ("r.seed", "number"),
    "exit_code": ("r.exit_code", "number"),
    "started": ("r.started", "time"),
    "ended": ("r.ended", "time"),
    "duration": ("seconds:(r.ended - r.started)", "number"),
    "commit": ("json:r.code:commit", "text"),
    "branch": ("json:r.code:branch", "text"),
    "env": ("r.env_digest", "text"),
}
_FIELDS_HINT = (
    "fields: metrics.KEY, params.KEY, tags.KEY, " + ", ".join(ATTRIBUTES) + " (see docs/runs.md)"
)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z0-9_])
      | (?P<field>(?:metrics|params|tags)\.(?:`[^`]+`|[A-Za-z0-9_./:-]+))
      | (?P<dotted>[A-Za-z_][A-Za-z0-9_]*\.(?:`[^`]+`|[A-Za-z0-9_./:-]+))
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|!=|<>|==|=|<|>)
      | (?P<punct>[(),])
    )""",
    re.X,
)
_OPS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_KEYWORDS = {"and", "or", "not", "in", "like", "is", "null"}
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Token:
    kind: str  # string | number | field | dotted | word | op | punct | end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise FilterError(
            f"filter is too long ({len(text)} characters)",
            hint=f"keep filters under {MAX_LENGTH} characters",
        )
    tokens = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].lstrip()[:20]
            where = len(text) - len(text[pos:].lstrip())
            hint = "quote text values: name = 'svd'"
            if bad[:1] in "'\"":
                hint = "a quoted value is not closed; double a quote inside it: 'it''s'"
            raise FilterError(f"cannot read the filter at column {where + 1}: {bad!r}", hint=hint)
        kind = m.lastgroup or ""
        tokens.append(Token(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def attribute_sql(name: str, dialect: Dialect) -> tuple[str, str]:
    expr, kind = ATTRIBUTES[name]
    if expr.startswith("seconds:"):
        return dialect.seconds(expr.removeprefix("seconds:")), kind
    if expr.startswith("json:"):
        _, column, key = expr.split(":")
        return dialect.json_text(column, key), kind
    return expr, kind


class _Parser:
    def __init__(self, text: str, dialect: Dialect) -> None:
        self.dialect = dialect
        self.tokens = tokenize(text)
        self.i = 0
        self.params: list[object] = []
        self.comparisons = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "word" and tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def expect_punct(self, p: str) -> None:
        tok = self.next()
        if tok.kind != "punct" or tok.text != p:
            raise self.error(tok, f"expected {p!r}")

    def error(self, tok: Token, what: str) -> FilterError:
        got = "the end" if tok.kind == "end" else repr(tok.text)
        return FilterError(
            f"{what} at column {tok.pos + 1}, found {got}",
            hint="example: metrics.rmse < 0.9 and params.model = 'svd'",
        )

    def parse(self) -> str:
        sql = self.expr(0)
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(tok, "expected 'and', 'or' or the end")
        return sql

    def expr(self, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise FilterError(
                "filter nests too deeply", hint=f"use at most {MAX_DEPTH} levels of parentheses"
            )
        parts = [self.term(depth)]
        while self.keyword("or"):
            parts.append(self.term(depth))
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def term(self, depth: int) -> str:
        parts = [self.factor(depth)]
        while self.keyword("and"):
            parts.append(self.factor(depth))
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def factor(self, depth: int) -> str:
        if self.keyword("not"):
            return f"NOT {self.factor(depth + 1)}"
        tok = self.peek()
        if tok.kind == "punct" and tok.text == "(":
            self.i += 1
            inner = self.expr(depth + 1)
            self.expect_punct(")")
            return f"({inner})"
        return self.comparison()

    def value(self) -> tuple[str, object]:
        tok = self.next()
        if tok.kind == "string":
            quote = tok.text[0]
            return "text", tok.text[1:-1].replace(quote * 2, quote)
        if tok.kind == "number":
            number = float(tok.text)
            if not math.isfinite(number) or abs(number) > 1e300:
                raise FilterError(
                    f"number {tok.text[:40]} is out of range",
                    hint="use numbers between -1e300 and 1e300",
                )
            return "number", number
        raise self.error(tok, "expected a value ('text' or a number)")

    def comparison(self) -> str:
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise FilterError(
                "filter has too many comparisons",
                hint=f"use at most {MAX_COMPARISONS}",
            )
        tok = self.next()
        if tok.kind == "field":
            table, _, key = tok.text.partition(".")
            if key.startswith("`"):
                key = key[1:-1]
            return self.keyed(table, key)
        if tok.kind == "word" and tok.text.lower() in ATTRIBUTES:
            expr, kind = attribute_sql(tok.text.lower(), self.dialect)
            return self._predicate(expr, kind, tok.text.lower())
        if tok.kind == "dotted":
            # 'metric.r2', 'param.k': a prefix that is not one of ours.
            import difflib

            prefix, _, key = tok.text.partition(".")
            close = difflib.get_close_matches(prefix.lower(), ["metrics", "params", "tags"], 1)
            guess = f"; did you mean '{close[0]}.{key}'?" if close else ""
            raise FilterError(f"unknown field {tok.text[:60]!r}{guess}", hint=_FIELDS_HINT)
        if tok.kind in ("word", "string"):
            name = tok.text.strip("'\"")
            raise FilterError(f"unknown field {name[:60]!r}", hint=_FIELDS_HINT)
        raise self.error(tok, "expected a field")

    def _predicate(self, column: str, kind: str, field: str) -> str:
        """``column`` compared with what follows; params appended in order."""
        negate = False
        if self.keyword("is"):
            negate = self.keyword("not")
            if not self.keyword("null"):
                raise self.error(self.peek(), "expected 'null' after 'is'")
            return f"{column} IS {'NOT ' if negate else ''}NULL"
        if self.keyword("not"):
            negate = True
            if not (self.peek().kind == "word" and self.peek().text.lower() in ("in", "like")):
                raise self.error(self.peek(), "expected 'in' or 'like' after 'not'")
        if self.keyword("in"):
            self.expect_punct("(")
            values = [self._coerce(kind, field, *self.value())]
            while self.peek().kind == "punct" and self.peek().text == ",":
                self.i += 1
                values.append(self._coerce(kind, field, *self.value()))
                if len(values) > 500:
                    raise FilterError(
                        "'in' lists hold at most 500 values", hint="split the filter or use like"
                    )
            self.expect_punct(")")
            self.params.extend(values)
            marks = ", ".join("?" * len(values))
            return f"{column} {'NOT ' if negate else ''}IN ({marks})"
        if self.keyword("like"):
            vkind, value = self.value()
            if vkind != "text":
                raise FilterError("'like' takes a quoted pattern", hint="e.g. name like 'svd-%'")
            self.params.append(value)
            return f"{column} {'NOT ' if negate else ''}{self.dialect.like} ?"
        tok = self.next()
        if tok.kind != "op":
            raise self.error(tok, "expected a comparison (=, !=, <, <=, >, >=, in, like, is)")
        self.params.append(self._coerce(kind, field, *self.value()))
        return f"{column} {_OPS[tok.text]} ?"

    def _coerce(self, kind: str, field: str, vkind: str, value: object) -> object:
        if kind == "number" and vkind != "number":
            raise FilterError(
                f"{field} is a number; compare it with a number, not {value!r}",
                hint=f"e.g. {field} < 0.9 (no quotes)",
            )
        if kind == "time":
            return Instant(parse_time(value))
        if kind == "status" and value not in STATUSES:
            raise FilterError(f"unknown status {value!r}", hint="statuses: " + ", ".join(STATUSES))
        return value

    def keyed(self, table: str, key: str) -> str:
        self.params.append(key)
        if table == "metrics":
            inner = "SELECT 1 FROM run_metric_summary m WHERE m.run_id = r.id AND m.key = ?"
            return self._exists(inner, "m.last", "number", f"metrics.{key}")
        sql_table = "run_params" if table == "params" else "run_tags"
        inner = f"SELECT 1 FROM {sql_table} p WHERE p.run_id = r.id AND p.key = ?"
        return self._exists(inner, None, "keyed", f"{table}.{key}")

    def _exists(self, inner: str, column: str | None, kind: str, field: str) -> str:
        # 'is null' means "not logged"; anything else requires the key to exist.
        save = self.i
        if self.keyword("is"):
            negate = self.keyword("not")
            if not self.keyword("null"):
                raise self.error(self.peek(), "expected 'null' after 'is'")
            return f"{'' if negate else 'NOT '}EXISTS ({inner})"
        self.i = save
        if column is not None:
            return f"EXISTS ({inner} AND {self._predicate(column, kind, field)})"
        # params/tags: text for quoted values, numbers for numbers; peek past the operator
        start = len(self.params)
        pred_text = self._predicate("p.value", "text", field)
        values = self.params[start:]
        if values and all(isinstance(v, float) for v in values):
            pred_text = pred_text.replace("p.value", "p.num", 1)
        elif any(isinstance(v, float) for v in values):
            raise FilterError(
                f"{field}: mix of numbers and text in one list",
                hint="quote every value, or none",
            )
        return f"EXISTS ({inner} AND {pred_text})"


def parse_time(value: object) -> float:
    if isinstance(value, float):
        return value
    text = str(value).strip()
    m = _RELATIVE.match(text)
    if m:
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise FilterError(
            f"cannot read time {text[:40]!r}",
            hint="use an ISO date ('2026-11-01', '2026-11-01T12:00') or a relative '-7d'",
        ) from None


def compile_filter(text: str, dialect: Dialect = SQLITE) -> tuple[str, list[object]]:
    """SQL for a WHERE clause over ``runs r``, and its parameters."""
    if not text.strip():
        return "1 = 1", []
    parser = _Parser(text, dialect)
    return parser.parse(), parser.params


def compile_sort(text: str, dialect: Dialect = SQLITE) -> tuple[str, list[object]]:
    """``KEY``, ``-KEY`` or ``KEY desc|asc`` → ORDER BY terms (missing values last)."""
    spec = text.strip()
    descending = False
    if spec.startswith("-"):
        descending, spec = True, spec[1:].strip()
    words = spec.rsplit(None, 1)
    if len(words) == 2 and words[1].lower() in ("asc", "desc"):
        descending, spec = words[1].lower() == "desc", words[0]
    direction = "DESC" if descending else "ASC"
    m = re.fullmatch(r"(metrics|params|tags)\.(`[^`]+`|[A-Za-z0-9_./:-]+)", spec)
    if m:
        key = m.group(2).strip("`")
        if m.group(1) == "metrics":
            expr = "(SELECT last FROM run_metric_summary WHERE run_id = r.id AND key = ?)"
            return f"{expr} IS NULL, {expr} {direction}", [key, key]
        # Values that read as numbers sort as numbers, before those that do not.
        table = "run_params" if m.group(1) == "params" else "run_tags"
        num = f"(SELECT num FROM {table} WHERE run_id = r.id AND key = ?)"
        text = f"(SELECT value FROM {table} WHERE run_id = r.id AND key = ?)"
        order = f"{text} IS NULL, {num} IS NULL, {num} {direction}, {text} {direction}"
        return order, [key] * 4
    if spec.lower() in ATTRIBUTES:
        expr = attribute_sql(spec.lower(), dialect)[0]
        return f"{expr} IS NULL, {expr} {direction}", []
    raise FilterError(f"cannot sort by {spec[:60]!r}", hint=_FIELDS_HINT)


@dataclass(frozen=True)
class RunList:
    runs: list[RunRecord]
    matched: int  # before the limit


def list_runs(
    db: Database,
    *,
    where: str | None = None,
    sort: str | None = None,
    limit: int | None = 50,
    offset: int = 0,
) -> RunList:
    clause, params = compile_filter(where or "", db.dialect)
    order, order_params = compile_sort(sort, db.dialect) if sort else ("r.started DESC", [])
    sql = f"SELECT r.id FROM runs r WHERE {clause} ORDER BY {order}, r.id DESC"
    ids = [row["id"] for row in db.query(sql, tuple(params + order_params))]
    shown = ids[offset:] if limit is None else ids[offset : offset + limit]
    return RunList(load_runs(db, shown, full=False), len(ids))
