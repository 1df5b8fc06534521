"""Saved views of the runs screen: a name -> the filter text and the sort, in the user's config.

Stored as `views.json` in `$IMBTUI_CONFIG_DIR`, else `$XDG_CONFIG_HOME/imbtui`, else
`~/.config/imbtui` — never in the store: the bundled sample store is read-only, a shared store
belongs to everyone, and nothing in the app changes a run's files. A view is the same text the
filter box takes, so a saved view works on any store. No Textual here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from imbtui.store.layout import atomic_write_json


@dataclass(frozen=True)
class SavedView:
    filter: str
    sort: str
    desc: bool = False


def views_path() -> Path:
    """Where saved views live (the folder need not exist yet)."""
    base = os.environ.get("IMBTUI_CONFIG_DIR")
    if base:
        return Path(base).expanduser() / "views.json"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return root / "imbtui" / "views.json"


def load_views(path: Path | None = None) -> dict[str, SavedView]:
    """name -> view; an absent or unreadable file is no views (the screen must still open)."""
    path = path or views_path()
    try:
        raw = json.loads(path.read_text())
        return {str(name): SavedView(str(v.get("filter", "")), str(v.get("sort", "started")),
                                     bool(v.get("desc", False)))
                for name, v in raw.get("views", {}).items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return {}


def save_view(name: str, view: SavedView, path: Path | None = None) -> Path:
    """Add or replace the view `name` (written to a temporary file, then renamed)."""
    path = path or views_path()
    views = load_views(path)
    views[name] = view
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"views": {k: asdict(v) for k, v in sorted(views.items())}})
    return path
