"""Query results: textual-fastdatatable over Arrow data, fast at 100,000 rows and beyond."""

from __future__ import annotations

import polars as pl
from textual_fastdatatable import DataTable, create_backend


class ResultsTable(DataTable):
    """A results grid whose backend holds a polars frame as Arrow columns (no Python rows).

    `frame` is the result as DuckDB returned it; `shown`, when given, is what the grid draws (the
    SQL screen passes its float columns formatted as `imbtui sql` prints them)."""

    def __init__(self, frame: pl.DataFrame, shown: pl.DataFrame | None = None,
                 **kwargs: object) -> None:
        drawn = frame if shown is None else shown
        super().__init__(backend=create_backend(drawn.to_arrow()), cursor_type="cell",
                         max_column_content_width=40, null_rep="∅", render_markup=False,
                         **kwargs)  # type: ignore[arg-type]
        self.frame = frame
        self.shown = drawn
