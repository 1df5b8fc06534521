"""The runs filter: free words, `field:value` / `field>=number` qualifiers and `/regex/`, ANDed.

    ratio>=10 method:ldam*          ratio at least 10, method starting with "ldam"
    status:running dataset:mnist1d  live runs on MNIST-1D (status also takes the table's words:
                                    live, done, crash, fail, stop, NaN)
    seed:0 /r100.*s[0-2]/           seed 0, and a field matching the regular expression
    exp100 ce                       free words: each occurs in a visible field (as before)

A text qualifier matches the whole value (case-insensitive), as a glob when it holds `*?[`
(`method:ldam*`), as a regular expression when written `/.../`; `name:` and `id:` match a part of
the name or run id. A numeric field takes `= != > >= < <=` (`:` means `=`). Anything else is a
`FilterError` with a one-line message. Pure Python over the runs table's row dicts: no Textual, no
DuckDB, so the parser and matcher are tested on hand-made rows.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# field -> how to read it from a row of the runs table
TEXT_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "name": lambda r: r.get("name"),
    "id": lambda r: r.get("run_id"),
    "status": lambda r: r.get("status"),
    "dataset": lambda r: r.get("dataset"),
    "profile": lambda r: r.get("profile"),
    "method": lambda r: r.get("method"),
    "model": lambda r: r.get("model"),
    "loss": lambda r: r.get("loss"),
    "sampler": lambda r: r.get("sampler"),
}
NUMBER_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ratio": lambda r: r.get("ratio"),
    "seed": lambda r: r.get("seed"),
    "epochs": lambda r: r.get("epochs"),
    "lr": lambda r: r.get("lr"),
    "bs": lambda r: r.get("batch_size"),
    "bal": lambda r: r.get("test_balanced"),
    "maj": lambda r: r.get("test_majority"),
    "min": lambda r: r.get("test_minority"),
}
ALIASES = {"run_id": "id", "batch_size": "bs", "run": "id"}
PART_FIELDS = ("name", "id")  # a plain value matches a part of these, the whole of the others
# the runs table's status words (runs_table.STATUS), so `status:live` finds what the table shows
STATUS_WORDS = {"live": "running", "done": "finished", "crash": "crashed", "fail": "failed",
                "stop": "interrupted", "nan": "diverged"}
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
    "=": operator.eq, ":": operator.eq,
}

TOKEN = re.compile(r"/(?:[^/\\]|\\.)*/?|\S+")  # a /regex/ may hold spaces
QUALIFIER = re.compile(r"^([A-Za-z_]+)(>=|<=|!=|>|<|=|:)(.*)$", re.S)


class FilterError(ValueError):
    """A filter that cannot be read; its message is one line for the screen."""


Row = dict[str, Any]
Test = Callable[[Row], bool]


@dataclass(frozen=True)
class RunFilter:
    """A parsed filter: `matches(row)` is True when every term matches."""

    text: str
    tests: tuple[Test, ...]

    def matches(self, row: Row) -> bool:
        return all(test(row) for test in self.tests)

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [r for r in rows if self.matches(r)]


def parse_filter(text: str) -> RunFilter:
    """The filter in `text`; raises FilterError (one line) when a term cannot be read."""
    return RunFilter(text, tuple(_term(tok) for tok in TOKEN.findall(text)))


def row_text(row: Row) -> list[str]:
    """The visible fields a free word or a bare /regex/ looks in (as the table shows them)."""
    ratio = row.get("ratio")
    return [str(v) for v in (row.get("name"), row.get("run_id"), row.get("dataset"),
                             row.get("profile"), row.get("status"), row.get("method"),
                             row.get("model"), "" if ratio is None else f"{ratio:g}")
            if v is not None]


# ==== one term ====================================================================================

def _term(token: str) -> Test:
    if token.startswith("/"):
        pattern = _regex(token)
        return lambda r: any(pattern.search(v) for v in row_text(r))
    m = QUALIFIER.match(token)
    if m is None:
        word = token.lower()
        return lambda r: any(word in v.lower() for v in row_text(r))
    key, op, value = m.group(1).lower(), m.group(2), m.group(3)
    key = ALIASES.get(key, key)
    if key in NUMBER_FIELDS:
        return _number_term(key, op, value)
    if key in TEXT_FIELDS:
        return _text_term(key, op, value)
    known = ", ".join([*TEXT_FIELDS, *NUMBER_FIELDS])
    raise FilterError(f"unknown field {key!r} in {token!r} (fields: {known})")


def _regex(token: str) -> re.Pattern[str]:
    if len(token) < 2 or not token.endswith("/"):
        raise FilterError(f"unclosed regular expression {token!r}: end it with /")
    try:
        return re.compile(token[1:-1], re.I)
    except re.error as e:
        raise FilterError(f"bad regular expression {token!r}: {e}") from None


def _number_term(key: str, op: str, value: str) -> Test:
    try:
        number = float(value)
    except ValueError:
        raise FilterError(f"{key}{op} wants a number, got {value!r}") from None
    compare, read = OPS[op], NUMBER_FIELDS[key]

    def test(r: Row) -> bool:
        v = read(r)
        return v is not None and v == v and compare(float(v), number)  # NaN / missing: no match

    return test


def _text_term(key: str, op: str, value: str) -> Test:
    if op not in (":", "=", "!="):
        raise FilterError(f"{key} is text: use {key}:value or {key}!=value, not {op}")
    if not value:
        raise FilterError(f"{key}{op} wants a value")
    want = _text_matcher(key, value)
    read = TEXT_FIELDS[key]

    def test(r: Row) -> bool:
        v = read(r)
        hit = v is not None and want(str(v).lower())
        return not hit if op == "!=" else hit

    return test


def _text_matcher(key: str, value: str) -> Callable[[str], bool]:
    if value.startswith("/"):
        pattern = _regex(value)
        return lambda v: pattern.search(v) is not None
    low = value.lower()
    if key == "status":
        low = STATUS_WORDS.get(low, low)
    if any(c in low for c in "*?["):
        return lambda v: fnmatch.fnmatchcase(v, low)
    if key in PART_FIELDS:
        return lambda v: low in v
    return lambda v: v == low
