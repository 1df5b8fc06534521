"""The documentation stays short, linked and true: the README fits on a few screens, every relative
link (and its #anchor) resolves, the quick `imbtui` commands the pages show run against a copy of the
sample store, every named query is documented, and no user-facing text tells the story of its own
development."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, imbtui

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 220

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def _prose(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (where links and headings live)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _fenced(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a fenced code block."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif fenced:
            out.append((n, line))
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ==== (1) the README is a front door ==============================================================

def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines (at most {MAX_README_LINES}): move detail to a page in docs/")


def test_readme_names_the_test_command_ci_runs() -> None:
    text = README.read_text()
    assert "make test" in text and "ATEN_CPU_CAPABILITY=default" in text


# ==== (2) every relative link resolves ============================================================

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lstrip("#").strip().replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line) for line in _prose(page.read_text()) if line.startswith("#")}


def _links() -> list[tuple[Path, str]]:
    found = []
    for page in [*PAGES, REPO / "sample_runs" / "README.md"]:
        for line in _prose(page.read_text()):
            for target in LINK.findall(INLINE_CODE.sub("", line)):
                if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                    found.append((page, target))
    return found


@pytest.mark.parametrize("page,target", _links(), ids=lambda v: _rel(v) if isinstance(v, Path)
                         else v)
def test_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{_rel(page)} links to {target}, which does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), (
            f"{_rel(page)} links to {target}: {_rel(dest)} has no heading with that anchor")


# ==== (3) the quick commands the pages show run ===================================================
# Commands that only read a store or print help: each runs in a second or two against a copy of
# sample_runs. train, sweep, browse, export and doctor --quarantine are long, interactive or write,
# and are left out.

QUICK = {"runs", "show", "sql", "query", "report", "data", "doctor"}
SHELL = {">", ">>", "<", "|", "&&", "||", ";", "&"}
PLACEHOLDER = re.compile(r"\.\.\.|…|\bRUN\b|\bNAME\b|\bFILE\b|\bDIR\b|\bPATH\b|<[^>]*>|^\[")
OUTPUT_FLAGS = {"-o", "--out", "--png"}


def _command_lines(page: Path) -> list[tuple[int, list[str]]]:
    """(line number, argv) of every `imbtui ...` command in the page's fenced blocks; a command
    continues over `\\`-ended lines and over lines inside an open quote."""
    out: list[tuple[int, list[str]]] = []
    lines = _fenced(page.read_text())
    i = 0
    while i < len(lines):
        n, text = lines[i]
        text = text.strip().removeprefix("$ ")
        i += 1
        if not text.startswith("imbtui "):
            continue
        while True:
            if text.endswith("\\") and i < len(lines):
                text = text[:-1] + " " + lines[i][1].strip()
                i += 1
                continue
            try:
                argv = shlex.split(text, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                if i >= len(lines):
                    raise
                text += "\n" + lines[i][1]
                i += 1
                continue
            break
        out.append((n, argv))
    return out


def _quick(argv: list[str]) -> bool:
    args = argv[1:]
    if not args or SHELL & set(args) or any(PLACEHOLDER.search(a) for a in args):
        return False
    if "--help" in args or "-h" in args:
        return True
    if args[0] not in QUICK or "--quarantine" in args:
        return False
    if args[0] == "data":  # only the offline dataset: the others download
        dataset = args[args.index("--dataset") + 1] if "--dataset" in args else "mnist1d"
        return dataset == "mnist1d" and "--data-dir" not in args
    return True


def _quick_commands() -> list[tuple[str, list[str]]]:
    seen: dict[tuple[str, ...], str] = {}
    for page in PAGES:
        for n, argv in _command_lines(page):
            if _quick(argv) and tuple(argv) not in seen:
                seen[tuple(argv)] = f"{_rel(page)}:{n}"
    return [(where, list(argv)) for argv, where in seen.items()]


QUICK_COMMANDS = _quick_commands()


def test_the_pages_show_quick_commands_to_run() -> None:
    assert len(QUICK_COMMANDS) >= 10, [c for _, c in QUICK_COMMANDS]


@pytest.fixture(scope="module")
def store_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs") / "sample_runs"
    shutil.copytree(REPO / "sample_runs", root)
    return root


def _bind(argv: list[str], store: Path, out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The command against the store copy, writing any output file into out_dir."""
    args, env = list(argv[1:]), {"IMBTUI_STORE": str(store)}
    for i, a in enumerate(args[:-1]):
        if a == "--store":
            args[i + 1] = str(store)
        elif a in OUTPUT_FLAGS:
            args[i + 1] = str(out_dir / Path(args[i + 1]).name)
    return args, env


@pytest.mark.parametrize("where,argv", QUICK_COMMANDS,
                         ids=[f"{w} {' '.join(a)[:60]}" for w, a in QUICK_COMMANDS])
def test_documented_command_runs(where: str, argv: list[str], store_copy: Path,
                                 tmp_path: Path) -> None:
    args, env = _bind(argv, store_copy, tmp_path)
    proc = imbtui(*args, env=env, check=False, timeout=120)
    assert proc.returncode == 0, (
        f"{where}: `{shlex.join(argv)}` exited {proc.returncode}\n{proc.stderr[-2000:]}")


# ==== every named query is documented =============================================================

def test_every_named_query_is_in_the_analyses_page() -> None:
    page = (REPO / "docs" / "analyses.md").read_text()
    missing = [q.stem for q in sorted((REPO / "queries").glob("*.sql")) if f"`{q.stem}`" not in page]
    assert not missing, f"docs/analyses.md does not list the named queries {missing}"


# ==== (4) no development history in product text ==================================================
# The same expression as the before-stop hook: text for users and readers of the code says why
# things are as they are now; how they came to be belongs in commit messages.

HISTORY = re.compile(r"\b(last|next|previous|first|second|third|fourth|fifth) session\b"
                     r"|sessions so far|\bthe VM\b|development VM")
PRODUCT = ["README.md", "docs", "imbtui", "trainer", "queries", "bench"]


def _product_files() -> list[Path]:
    files = []
    for name in PRODUCT:
        top = REPO / name
        candidates = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        files += [p for p in candidates if "__pycache__" not in p.parts]
    return files


def test_no_development_history_in_product_text() -> None:
    found = []
    for path in _product_files():
        data = path.read_bytes()
        if b"\0" in data:  # binary
            continue
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if HISTORY.search(line):
                found.append(f"{_rel(path)}:{n}: {line.strip()[:100]}")
    assert not found, "development history in product text:\n" + "\n".join(found)
