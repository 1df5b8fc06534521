"""What the SQL screen runs: a read-only statement over the store, and the export of its result.

`run_query` checks the text (read-only, and the statement under an EXPLAIN too), binds the named
parameters it uses, and keeps at most `MAX_RESULT_ROWS` rows; `export_frame` writes a result to CSV,
Parquet or JSON anywhere but inside the run store. `statement_at` finds the statement under the
editor's cursor; the catalog and completion live in `sqlcatalog`, the history in `sqlhistory`.
No Textual here: these run in thread workers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from imbtui.console import flat_for_csv, frame_json, shown_floats
from imbtui.errors import UserError
from imbtui.queries import used_params
from imbtui.store import QueryError, check_read_only

MAX_RESULT_ROWS = 1_000_000  # the SQL screen keeps at most this many rows of one result
EXPORT_SUFFIXES = (".csv", ".parquet", ".json")

_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\b(\s+ANALY[SZ]E\b)?(\s*\([^)]*\))?", re.IGNORECASE)


def check_query(cur: duckdb.DuckDBPyConnection, text: str) -> list[Any]:
    """The store's read-only check, plus the statement under an EXPLAIN: `EXPLAIN ANALYZE COPY ...
    TO 'file'` parses as an EXPLAIN yet executes the COPY, which could overwrite a stored part."""
    statements = check_read_only(cur, text)
    for st in statements:
        if st.type.name == "EXPLAIN":
            inner = _EXPLAIN_RE.sub("", st.query, count=1)
            if not inner.strip():
                raise QueryError("EXPLAIN of what? add a SELECT")
            check_query(cur, inner)
    return statements


@dataclass
class QueryResult:
    """One statement's result as the SQL screen shows it: `frame` as DuckDB returned it (what
    export writes), `shown` with its float columns as text, formatted like `imbtui sql`'s table."""

    sql: str
    frame: pl.DataFrame
    seconds: float
    truncated: bool  # the statement returned more than MAX_RESULT_ROWS rows
    shown: pl.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.shown is None:
            self.shown = shown_floats(self.frame)


def bind(sql: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The values of the `$name`s `sql` uses (DuckDB refuses unused ones); a missing one is an
    error that says which."""
    used = used_params(sql)
    missing = sorted(used - set(params or {}))
    if missing:
        raise QueryError(f"no value for parameter ${missing[0]} (write a literal in its place)")
    return {k: v for k, v in (params or {}).items() if k in used}


def run_query(cur: duckdb.DuckDBPyConnection, text: str,
              params: dict[str, Any] | None = None) -> QueryResult:
    """Run read-only SQL as `imbtui sql` does: every statement in order, the last one's rows kept
    (at most MAX_RESULT_ROWS). `params` binds `$name`s."""
    t0 = time.perf_counter()
    statements = [st.query for st in check_query(cur, text)]
    try:
        for st in statements[:-1]:
            cur.execute(st, bind(st, params) or None).fetchall()
        rel = cur.sql(statements[-1], params=bind(statements[-1], params) or None)
        frame = rel.limit(MAX_RESULT_ROWS + 1).pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip().splitlines()[0] if str(exc).strip() else
                         exc.__class__.__name__) from None
    truncated = frame.height > MAX_RESULT_ROWS
    return QueryResult(text, frame.head(MAX_RESULT_ROWS), time.perf_counter() - t0, truncated)


def export_frame(frame: pl.DataFrame, path: Path, store_root: Path) -> Path:
    """Write a result as CSV, Parquet or JSON (by suffix; CSV and JSON as `imbtui sql --format`
    prints them); never inside the run store."""
    path = path.expanduser().resolve()
    root = store_root.resolve()
    if path == root or root in path.parents:
        raise UserError(f"refusing to write into the run store ({root})")
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise UserError(f"export to .csv, .parquet or .json, not "
                        f"{suffix or 'a file without suffix'!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        flat_for_csv(frame).write_csv(path)
    elif suffix == ".json":
        path.write_text(frame_json(frame) + "\n")
    else:
        frame.write_parquet(path)
    return path


# ==== the statement under the cursor ==============================================================

@dataclass(frozen=True)
class Span:
    """One statement of a buffer: text[start:end], its `;` included."""

    start: int
    end: int
    text: str
    empty: bool  # only blanks and comments


def split_statements(text: str) -> list[Span]:
    """The statements of a buffer, split at each `;` outside quotes, comments and $$ strings."""
    spans: list[Span] = []
    start, i, code = 0, 0, False
    n = len(text)
    while i < n:
        ch, two = text[i], text[i:i + 2]
        if two == "--":
            i = _skip_to(text, "\n", i + 2)
            continue
        if two == "/*":
            i = _skip_to(text, "*/", i + 2, keep=False)
            continue
        if ch in "'\"":
            i, code = _skip_quoted(text, i, ch), True
            continue
        if two == "$$":
            i, code = _skip_to(text, "$$", i + 2, keep=False), True
            continue
        if ch == ";":
            spans.append(Span(start, i + 1, text[start:i + 1], not code))
            start, code = i + 1, False
        elif not ch.isspace():
            code = True
        i += 1
    if start < n:
        spans.append(Span(start, n, text[start:], not code))
    return spans


def _skip_to(text: str, end: str, i: int, keep: bool = True) -> int:
    """The index of `end` at or after i (kept: a line comment's newline), or past its end."""
    j = text.find(end, i)
    if j < 0:
        return len(text)
    return j if keep else j + len(end)


def _skip_quoted(text: str, i: int, quote: str) -> int:
    """Past the quoted string opening at i (a doubled quote inside is a quote)."""
    j = i + 1
    while j < len(text):
        if text[j] == quote:
            if text[j + 1:j + 2] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return j


def statement_at(text: str, offset: int) -> str:
    """The statement under `offset`: the last one that starts (its first non-blank character) at
    or before it, so the cursor just after a `;` or on the blank lines below still means that
    statement; before the first one, the first. Empty when the buffer holds no statement."""
    spans = [s for s in split_statements(text) if not s.empty]
    if not spans:
        return ""
    chosen = spans[0]
    for s in spans:
        if s.start + len(s.text) - len(s.text.lstrip()) <= offset:
            chosen = s
    return chosen.text.strip()
