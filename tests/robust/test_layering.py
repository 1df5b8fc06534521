"""The architecture's import rules, checked in fresh interpreters (the Harlequin way)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def imported(modules: list[str]) -> set[str]:
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(' '.join(sorted(k.split('.')[0] for k in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          check=True)
    return set(proc.stdout.split())


@pytest.mark.parametrize("module", ["trainer.loop", "trainer.data", "imbtui.store",
                                    "imbtui.store.writer", "imbtui.store.doctor",
                                    "imbtui.store.admin"])
def test_trainer_and_store_never_import_textual(module: str) -> None:
    assert "textual" not in imported([module])


def test_store_never_imports_torch() -> None:
    assert "torch" not in imported(["imbtui.store", "imbtui.store.writer"])


def test_tui_never_imports_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("imbtui.tui.app") is None:
        pytest.skip("the TUI app module is not present")
    assert "torch" not in imported(["imbtui.tui.app"])


def test_the_apps_data_layer_never_imports_textual_or_torch() -> None:
    # imbtui.tui.data runs in thread workers, benchmarks and tests: plain DuckDB / polars only.
    assert not {"textual", "torch"} & imported(["imbtui.tui.data"])
