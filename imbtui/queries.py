"""Named SQL analyses: the .sql files of the top-level `queries/` folder.

Installed from a wheel they live in the package `imbtui.queries` (pyproject maps the folder there); in
a plain checkout they are read from the folder itself. Each file opens with a comment block: the first
line is the question it answers, then `params:` and `columns:` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from imbtui.errors import UserError

_NAME_RE = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class NamedQuery:
    name: str
    question: str
    header: str
    sql: str


def queries_dir() -> Path:
    try:
        path = Path(str(resources.files("imbtui._queries")))
        if path.is_dir() and any(path.glob("*.sql")):
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "queries"


def list_queries() -> list[NamedQuery]:
    return [_parse(p) for p in sorted(queries_dir().glob("*.sql"))]


def get_query(name: str) -> NamedQuery:
    if not _NAME_RE.match(name):
        raise UserError(f"invalid query name {name!r}: use lower-case letters, digits and '_'")
    path = queries_dir() / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(q.name for q in list_queries())
        raise UserError(f"unknown query {name!r}; known: {known}")
    return _parse(path)


def _parse(path: Path) -> NamedQuery:
    text = path.read_text()
    header_lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        header_lines.append(line[2:].strip())
    question = header_lines[0] if header_lines else ""
    return NamedQuery(path.stem, question, "\n".join(header_lines), text)
