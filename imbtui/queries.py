"""Named SQL analyses: the .sql files of the top-level `queries/` folder.

Installed from a wheel they live in the package `imbtui._queries` (pyproject maps the folder there);
in a plain checkout they are read from the folder itself. Each file opens with a comment block:

    -- The question it answers, on one line.
    -- params:
    --   runs       VARCHAR[]  run ids to include; empty = every run  [default: []]
    --   threshold  DOUBLE     train accuracy that counts as learned   [default: 0.5]
    -- columns:
    --   run_id, ...

The params block is what `bind` reads: every `$name` the SQL uses is declared there with its DuckDB
type and default, so values are always bound as query parameters and never pasted into SQL text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from imbtui.errors import UserError

_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_PARAM_RE = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>VARCHAR\[\]|VARCHAR|DOUBLE|INTEGER|"
                       r"BOOLEAN)\s+(?P<help>.*?)\s*\[default:\s*(?P<default>.*)\]\s*$")
_USE_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One declared query parameter: its DuckDB type, a help line and its default."""

    name: str
    type: str
    help: str
    default: Any

    def convert(self, value: Any) -> Any:
        """A Python value of this parameter's type; strings (from the CLI) are parsed."""
        try:
            return _convert(self.type, value)
        except (TypeError, ValueError):
            raise UserError(f"parameter {self.name}: expected {_TYPE_WORDS[self.type]}, "
                            f"got {value!r}") from None


@dataclass(frozen=True)
class NamedQuery:
    name: str
    question: str
    header: str
    sql: str
    params: tuple[Param, ...] = ()

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def bind(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every declared parameter, from `given` where present, else its default."""
        given = dict(given or {})
        unknown = sorted(set(given) - {p.name for p in self.params})
        if unknown:
            takes = ", ".join(p.name for p in self.params) or "no parameters"
            raise UserError(f"query {self.name!r} has no parameter {unknown[0]!r} "
                            f"(it takes: {takes})")
        return {p.name: p.convert(given[p.name]) if p.name in given else p.default
                for p in self.params}


_TYPE_WORDS = {"VARCHAR[]": "a list of strings", "VARCHAR": "a string", "DOUBLE": "a number",
               "INTEGER": "an integer", "BOOLEAN": "true or false"}


def _convert(type_: str, value: Any) -> Any:
    if type_ == "VARCHAR[]":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return [str(v) for v in value]
    if type_ == "VARCHAR":
        return str(value)
    if type_ == "DOUBLE":
        return float(value)
    if type_ == "INTEGER":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _TRUE | _FALSE:
        raise ValueError(value)
    return word in _TRUE


def queries_dir() -> Path:
    try:
        path = Path(str(resources.files("imbtui._queries")))
        if path.is_dir() and any(path.glob("*.sql")):
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "queries"


def list_queries() -> list[NamedQuery]:
    return [parse_query(p) for p in sorted(queries_dir().glob("*.sql"))]


def get_query(name: str) -> NamedQuery:
    if not _NAME_RE.match(name):
        raise UserError(f"invalid query name {name!r}: use lower-case letters, digits and '_'")
    path = queries_dir() / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(q.name for q in list_queries())
        raise UserError(f"unknown query {name!r}; known: {known}")
    return parse_query(path)


def load_query(ref: str) -> NamedQuery:
    """A named query, or a user's own .sql file (a copy of one, changed) given by its path."""
    if ref.endswith(".sql") or "/" in ref or "\\" in ref:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise UserError(f"no query file {ref!r}")
        return parse_query(path)
    return get_query(ref)


def parse_query(path: Path) -> NamedQuery:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read query file {str(path)!r} "
                        f"({exc.__class__.__name__})") from None
    header = _header_lines(text)
    question = " ".join(_first_paragraph(header))
    params = tuple(_parse_params(path.stem, header))
    return NamedQuery(path.stem, question, "\n".join(header), text, params)


def _header_lines(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].rstrip())
    return lines


def _first_paragraph(header: list[str]) -> list[str]:
    """The question: the header's lines up to a blank line or the `params:` line."""
    lines = []
    for line in header:
        if not line.strip() or line.strip().startswith(("params:", "columns:")):
            break
        lines.append(line.strip())
    return lines


def _parse_params(name: str, header: list[str]) -> list[Param]:
    """The lines between `params:` and the next `word:` line; `params: none` declares none."""
    params: list[Param] = []
    inside = False
    for raw in header:
        line = raw.strip()
        if line.startswith("params:"):
            inside = True
            continue
        if inside and re.match(r"^[a-z]+:", line) and not _PARAM_RE.match(line):
            break
        if inside and line:
            params.append(_parse_param(name, line))
    return params


def _parse_param(query: str, line: str) -> Param:
    m = _PARAM_RE.match(line)
    if not m:
        raise UserError(f"query {query!r}: cannot read parameter line {line!r} "
                        f"(expected: name TYPE help [default: value])")
    type_ = m["type"]
    raw = m["default"].strip()
    default = json.loads(raw) if type_ == "VARCHAR[]" else _convert(type_, raw.strip("'\""))
    return Param(m["name"], type_, m["help"], default)


def used_params(sql: str) -> set[str]:
    """The `$name` parameters a query's SQL uses (comments and string literals left out)."""
    code = re.sub(r"--[^\n]*", "", sql)
    code = re.sub(r"'(?:[^']|'')*'", "''", code)
    return set(_USE_RE.findall(code))
