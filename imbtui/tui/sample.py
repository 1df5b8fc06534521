"""Where the bundled sample store lives: the package `imbtui._sample_runs` when installed from a
wheel, else the top-level `sample_runs/` folder of a checkout (as imbtui.queries finds queries/)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_store() -> Path | None:
    """The sample store folder, or None when this installation has no sample runs."""
    try:
        path = Path(str(resources.files("imbtui._sample_runs")))
        if _has_runs(path):
            return path
    except ModuleNotFoundError:
        pass
    path = Path(__file__).resolve().parent.parent.parent / "sample_runs"
    return path if _has_runs(path) else None


def _has_runs(path: Path) -> bool:
    runs = path / "runs"
    return runs.is_dir() and any((d / "run.json").is_file() for d in runs.iterdir())
