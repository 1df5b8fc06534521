"""Terminal output for the CLI: tables from DataFrames, the training progress bar, the run summary.

Uses rich only; knows nothing of torch (the progress hooks are duck-typed to trainer.loop.Hooks).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import polars as pl
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console()
err = Console(stderr=True)
MAX_TABLE_ROWS = 1000


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


# columns never narrowed below these widths: a run id (copied into the next command) and a status
MIN_WIDTH = {"run_id": 22, "status": 8}


def plain_table(title: str | None = None) -> Table:
    """Every table imbtui prints: a rule under the header, no vertical rules and no outer padding
    (on an 80-column terminal the box's rules cost a run listing most of its name column)."""
    return Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, collapse_padding=True,
                 pad_edge=False, show_edge=False)


def frame_table(frame: pl.DataFrame, title: str | None = None,
                max_rows: int = MAX_TABLE_ROWS) -> Table:
    table = plain_table(title)
    for name, dtype in frame.schema.items():
        # run ids are what users copy into the next command: never truncate them
        keep = name == "run_id"
        table.add_column(name, justify="right" if dtype.is_numeric() else "left", no_wrap=keep,
                         min_width=MIN_WIDTH.get(name))
    shown = frame.head(max_rows)
    formats = [column_format(shown[c].to_list()) if t.is_float() else fmt
               for c, t in shown.schema.items()]
    for row in shown.iter_rows():
        table.add_row(*(f(v) for f, v in zip(formats, row)))
    return table


def column_format(values: list[Any]) -> Callable[[Any], str]:
    """One number of decimals for a whole column of floats, so that its points line up and 0.990
    does not show as 0.99 beside 0.822: four significant digits for the largest value. Columns
    with values below 0.001 or from a million up keep `fmt`'s per-value format."""
    decimals = float_decimals(pl.Series(values, dtype=pl.Float64, strict=False))
    if decimals is None:
        return fmt

    def one(value: Any) -> str:
        if isinstance(value, float) and math.isfinite(value):
            return f"{value:.{decimals}f}"
        return fmt(value)
    return one


def float_decimals(values: pl.Series) -> int | None:
    """The decimals of `column_format`: four significant digits for the largest finite value;
    None (`fmt` for each value) without a finite value, or with one below 0.001 or from 1e6."""
    finite = values.drop_nulls()
    finite = finite.filter(finite.is_finite()).abs()
    if finite.len() == 0:
        return None
    top = float(finite.max())  # type: ignore[arg-type]
    if top >= 1e6 or bool(((finite > 0) & (finite < 1e-3)).any()):
        return None
    return max(0, 4 - len(str(int(top))))


def shown_floats(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with each float column as the text `frame_table` prints for it (`column_format`),
    right-aligned under its name; NULL stays NULL. The browse app's SQL screen shows its results
    through this, so the screen and `imbtui sql` print a number alike. One `str.format` per value
    (no per-value branching): about 0.4 s a million values, in the screen's worker thread."""
    texts = []
    for name, dtype in frame.schema.items():
        if not dtype.is_float():
            continue
        column = frame[name]
        decimals = float_decimals(column)
        if decimals is None:
            shown = [fmt(v) for v in column.fill_null(0.0).to_list()]
        else:  # non-finite values print as fmt prints them: nan, inf, -inf
            shown = list(map(f"{{:.{decimals}f}}".format, column.fill_null(0.0).to_list()))
        text = pl.Series(name, shown, dtype=pl.String)
        width = max(len(name), int(text.str.len_chars().max() or 0))
        text = text.str.pad_start(width)
        texts.append(pl.when(column.is_null()).then(None).otherwise(text).alias(name))
    return frame.with_columns(texts) if texts else frame


def print_frame(frame: pl.DataFrame, fmt_name: str, title: str | None = None) -> None:
    """table | csv | json (an array of objects) to stdout."""
    if fmt_name == "csv":
        sys.stdout.write(flat_for_csv(frame).write_csv())
    elif fmt_name == "json":
        sys.stdout.write(frame_json(frame) + "\n")
    else:
        table = frame_table(frame, title)
        out.print(table)
        # notes on the table go to stderr: what lands in a file or a pipe is the table alone
        if frame.height > MAX_TABLE_ROWS:
            err.print(f"[dim]… {frame.height - MAX_TABLE_ROWS} more rows; use --format csv or "
                      f"json for all {frame.height}[/dim]")
        if Measurement.get(out, out.options.update_width(10_000), table).maximum > out.width:
            err.print(f"[dim]columns narrowed to fit {out.width} characters; --format csv or json "
                      f"shows them whole[/dim]")


def flat_for_csv(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV has no lists or structs: write such columns as JSON text."""
    nested = [c for c, t in frame.schema.items() if t.is_nested()]
    return frame.with_columns(
        pl.Series(c, [json.dumps(_jsonable(v)) for v in frame[c].to_list()], dtype=pl.String)
        for c in nested)


def frame_json(frame: pl.DataFrame) -> str:
    rows = [{k: _jsonable(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
    return json.dumps(rows, indent=1)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, Decimal):  # DuckDB's sum() of integers is a wide decimal: keep it a number
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


class TrainProgress:
    """trainer.loop.Hooks drawn as a rich progress bar: epoch, loss, majority / minority accuracy."""

    def __init__(self, quiet: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(bar_width=24),
            # short enough that an 80-column terminal keeps a bar and the elapsed time
            TextColumn("loss {task.fields[loss]} · train acc maj {task.fields[maj]} "
                       "min {task.fields[min]}"),
            TimeElapsedColumn(), console=err, disable=quiet)
        self.task = None
        self.epochs = 0

    def __enter__(self) -> TrainProgress:
        return self  # the bar appears at on_start, after every argument has been checked

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:  # stopping a bar never started prints a blank line
            self.progress.stop()

    def on_start(self, info: dict[str, Any]) -> None:
        self.epochs = info["epochs"]
        self.progress.start()
        err.print(f"run [bold]{info['run_id']}[/bold] on {info['device']}: training counts "
                  f"{info['counts']}")
        self.task = self.progress.add_task("train", total=info["total_steps"], epoch=f"0/{self.epochs}",
                                           loss="  -  ", maj="  -  ", min="  -  ")

    def on_flush(self, step: int, loss: float) -> None:
        self.progress.update(self.task, completed=step + 1, loss=f"{loss:.3f}")

    def on_epoch(self, epoch: int, summary: dict[str, float]) -> None:
        self.progress.update(self.task, epoch=f"{epoch}/{self.epochs}",
                             maj=f"{summary['train_majority']:.3f}",
                             min=f"{summary['train_minority']:.3f}")


def summary_table(final: dict[str, float], first: dict[str, float] | None = None) -> Table:
    """Majority vs minority accuracy at the end (and after epoch 1), with the train-test gap:
    `final` is a final_results row, `first` the epoch-1 training accuracy per group."""
    table = plain_table("majority vs minority")
    for col in ("group", "train acc", "test acc", "train-test gap"):
        table.add_column(col, justify="left" if col == "group" else "right")
    if first:
        table.add_column("train acc, epoch 1", justify="right")
    for grp in ("majority", "minority", "balanced"):
        tr, te, gap = final[f"train_{grp}"], final[f"test_{grp}"], final[f"gap_{grp}"]
        row = [grp, f"{tr:.3f}", f"{te:.3f}", f"{gap:+.3f}"]
        if first:
            row.append(f"{first[f'train_{grp}']:.3f}")
        table.add_row(*row)
    return table
