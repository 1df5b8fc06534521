"""Query results: textual-fastdatatable over Arrow data, fast at 100,000 rows and beyond."""

from __future__ import annotations

import polars as pl
from textual_fastdatatable import DataTable, create_backend


class ResultsTable(DataTable):
    """A results grid whose backend holds the polars frame as Arrow columns (no Python rows)."""

    def __init__(self, frame: pl.DataFrame, **kwargs: object) -> None:
        super().__init__(backend=create_backend(frame.to_arrow()), cursor_type="cell",
                         max_column_content_width=40, null_rep="∅", render_markup=False,
                         **kwargs)  # type: ignore[arg-type]
        self.frame = frame
