"""imbtui: a terminal workbench for how class imbalance shapes the learning dynamics of networks."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["open_store"]


def __getattr__(name: str) -> Any:
    # Lazy: `import imbtui` (and so `imbtui --help`) must not pay for DuckDB and polars.
    if name == "open_store":
        from imbtui.api import open_store

        return open_store
    raise AttributeError(f"module 'imbtui' has no attribute {name!r}")
