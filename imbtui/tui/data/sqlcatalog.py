"""The SQL screen's catalog and completion: what the store's connection holds, with the semantic
layer's words for it, and the names that complete the word under the editor's cursor.

`load_catalog` reads the views, tables and macros of a connection with their column types (one
query each to duckdb_columns, duckdb_keywords, duckdb_functions: ~50 ms, run in a worker once per
store refresh); each definition is the text the store reference (docs/store.md) prints, taken
from `imbtui.store.reference` and `imbtui.store.semantic`, never written again here. `complete`
is pure Python over that catalog (well under a millisecond), so it runs as the user types.
DuckDB's own `sql_auto_complete` needs the autocomplete extension, which DuckDB downloads on
first use: not possible offline, and a round trip per keystroke besides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import duckdb

from imbtui.store.reference import RUN_DOCS, TABLE_DOCS
from imbtui.store.semantic import MACROS, VIEWS


@dataclass(frozen=True)
class CatalogColumn:
    name: str
    type: str
    definition: str


@dataclass(frozen=True)
class CatalogEntry:
    """A relation the SQL can name: a stored `table`, a semantic-layer `view`, or a `macro`."""

    name: str
    kind: str
    doc: str
    columns: tuple[CatalogColumn, ...]
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...] = ()
    keywords: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    _by_name: dict[str, CatalogEntry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({e.name.lower(): e for e in self.entries})

    def entry(self, name: str) -> CatalogEntry | None:
        return self._by_name.get(name.lower())


def definitions() -> dict[str, tuple[str, str, dict[str, str], tuple[str, ...]]]:
    """name -> (kind, doc, {column: definition}, params) from the store reference's sources."""
    out: dict[str, tuple[str, str, dict[str, str], tuple[str, ...]]] = {
        "runs": ("table", "One row per run, from its run.json.", dict(RUN_DOCS), ())}
    for table, (doc, columns) in TABLE_DOCS.items():
        out[table] = ("table", doc, dict(columns), ())
    for view in VIEWS:
        out[view.name] = ("view", view.doc, dict(view.columns), ())
    for macro in MACROS:
        out[macro.name] = ("macro", macro.doc, dict(macro.columns), tuple(macro.params))
    return out


_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def load_catalog(cur: duckdb.DuckDBPyConnection) -> Catalog:
    """The catalog of a connection whose store views exist (a thread worker calls this)."""
    types: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in cur.sql(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE NOT internal AND schema_name = 'main' AND database_name = current_database() "
            "ORDER BY table_name, column_index").fetchall():
        types.setdefault(table, []).append((column, dtype))
    defs = definitions()
    entries = []
    for name in [*defs, *sorted(set(types) - set(defs))]:
        if name.startswith("_") or (name not in types and name not in defs):
            continue  # the app's own tables (_imbtui_runs) are an implementation detail
        kind, doc, described, params = defs.get(name, ("view", "", {}, ()))
        typed = types.get(name) or [(c, "") for c in described]
        columns = tuple(CatalogColumn(c, t, described.get(c, "")) for c, t in typed)
        entries.append(CatalogEntry(name, kind, doc, columns, params))
    keywords = tuple(sorted({k.upper() for (k,) in cur.sql(
        "SELECT keyword_name FROM duckdb_keywords()").fetchall()}))
    functions = tuple(sorted({f for (f,) in cur.sql(
        "SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()
        if _NAME.match(f) and not f.startswith("__")}))
    return Catalog(tuple(entries), keywords, functions)


# ==== completion ==================================================================================

@dataclass(frozen=True)
class Completion:
    text: str  # what replaces the word under the cursor
    kind: str  # column, table, view, macro, function or keyword
    detail: str  # where it comes from: "steps.loss_sum DOUBLE", ...


_WORD = re.compile(r"(?:(?P<qual>[A-Za-z_][A-Za-z0-9_]*)\.)?(?P<word>[A-Za-z_][A-Za-z0-9_]*)?$")
_FROM = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s*\([^)]*\))?"
                   r"(?:\s+(?:AS\s+)?([A-Za-z_][A-Za-z0-9_]*))?", re.IGNORECASE)
_NOT_ALIAS = {"on", "using", "where", "join", "left", "right", "inner", "outer", "full", "cross",
              "group", "order", "limit", "natural", "union", "positional", "asof", "semi", "anti",
              "having", "qualify", "window", "except", "intersect"}


def word_at(text: str, offset: int) -> tuple[int, str | None, str]:
    """(start of the word being typed, its qualifier before a dot or None, the word so far)."""
    m = _WORD.search(text[max(0, offset - 200):offset])
    word = m["word"] or "" if m else ""
    return offset - len(word), (m["qual"] if m else None), word


def relations_in(statement: str) -> dict[str, str]:
    """alias (or name) -> relation name for each relation the statement reads FROM or JOINs."""
    seen: dict[str, str] = {}
    for m in _FROM.finditer(statement):
        name, alias = m[1], m[2]
        seen[name.lower()] = name
        if alias and alias.lower() not in _NOT_ALIAS:
            seen[alias.lower()] = name
    return seen


def complete(catalog: Catalog, text: str, offset: int, statement: str = "",
             limit: int = 20) -> tuple[int, list[Completion]]:
    """The completions of the word before `offset` in `text`, best first, and where that word
    starts. After `x.` they are the columns of relation (or alias) x; otherwise the columns of the
    relations `statement` reads, then relations, other columns, functions and keywords. Nothing
    for an empty word (except after a dot) or one that is already complete."""
    start, qual, word = word_at(text, offset)
    lowered = word.lower()
    used = relations_in(statement)
    if qual is not None:
        entry = catalog.entry(used.get(qual.lower(), qual))
        if entry is None:
            return start, []
        found = [_column(entry, c) for c in entry.columns if c.name.lower().startswith(lowered)]
        return start, [c for c in found if c.text.lower() != lowered][:limit]
    if not word:
        return start, []
    found: list[Completion] = []
    here = [catalog.entry(n) for n in dict.fromkeys(used.values())]
    for entry in [e for e in here if e is not None]:
        found += [_column(entry, c) for c in entry.columns if c.name.lower().startswith(lowered)]
    found += [Completion(e.name, e.kind, _doc_line(e.doc)) for e in catalog.entries
              if e.name.lower().startswith(lowered)]
    for entry in catalog.entries:
        if entry not in here:
            found += [_column(entry, c) for c in entry.columns
                      if c.name.lower().startswith(lowered)]
    found += [Completion(f, "function", "") for f in catalog.functions if f.startswith(lowered)]
    upper = word.isupper() or not word.islower()
    found += [Completion(k if upper else k.lower(), "keyword", "") for k in catalog.keywords
              if k.lower().startswith(lowered)]
    unique: dict[str, Completion] = {}
    for c in found:
        if c.text.lower() != lowered:
            unique.setdefault(c.text.lower(), c)
    return start, list(unique.values())[:limit]


def _column(entry: CatalogEntry, column: CatalogColumn) -> Completion:
    return Completion(column.name, "column", f"{entry.name}.{column.name} {column.type}".strip())


def _doc_line(doc: str) -> str:
    return doc.split(". ")[0].rstrip(".")
