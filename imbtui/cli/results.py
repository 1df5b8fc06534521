"""`imbtui runs`, `show`, `sql`, `query` and `report`: what the store holds, as tables and numbers."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from imbtui.cli.common import (Fmt, StoreOpt, UserError, _resolve_run, _store, _warn, app)
from trainer.options import MAX_EPOCHS


# ==== runs / show =================================================================================

@app.command()
def runs(store: StoreOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False) -> None:
    """List the runs in the store with their status and final accuracies.

    Docs: docs/analyses.md
    """
    from imbtui.console import frame_json, frame_table, out

    st = _store(store)
    con = st.connect()
    frame = con.sql("""
        SELECT r.run_id, r.name, r.status, r.dataset, r.profile, r.ratio, r.model, r.loss,
               r.sampler, r.drw, r.method, r.seed, r.subset_seed, r.epoch_done, r.epochs,
               r.step_done, r.total_steps,
               f.* EXCLUDE (run_id, epoch),
               r.created_at, r.finished_at, r.heartbeat_at
        FROM runs r LEFT JOIN final_results f USING (run_id)
        ORDER BY r.created_at, r.run_id""").pl()
    _warn(st)
    if as_json:
        print(frame_json(frame))
    elif frame.height == 0:
        out.print(f"no runs in {st.root} — start one with: imbtui train --ratio 100")
    else:
        out.print(frame_table(_runs_view(frame, out.width), title=f"runs in {st.root}"))


def _runs_view(frame, width: int = 80):
    """The columns that fit the terminal (ratio and method from 110 columns); --json has them
    all."""
    import polars as pl

    wide = ["ratio", "method"] if width >= 110 else []
    return frame.select(
        "run_id", "name", "status", *wide,
        (pl.col("epoch_done").cast(pl.String) + "/" + pl.col("epochs").cast(pl.String)).alias(
            "epochs"),
        pl.col("test_balanced").round(3).alias("bal"),
        pl.col("test_majority").round(3).alias("maj"),
        pl.col("test_minority").round(3).alias("min"))


@app.command()
def show(run: Annotated[str, typer.Argument(help="Run id (or a unique prefix, or its name).")],
         store: StoreOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: the run, "
                                               "its config, classes and groups.")] = False
         ) -> None:
    """Show one run: its config, class counts and groups, and final per-class and group accuracy.

    Docs: docs/analyses.md
    """
    import json

    from imbtui.console import frame_json, frame_table, out

    st = _store(store)
    run_id = _resolve_run(st, run)
    meta = st.read_run(run_id) or {}
    per_class, groups = _run_finals(st.connect(), run_id)
    if as_json:
        print(json.dumps({"run_id": run_id, "name": meta.get("name"),
                          "status": meta.get("status"), "device": meta.get("device"),
                          "message": meta.get("message"), "config": meta.get("config", {}),
                          "classes": json.loads(frame_json(per_class)),
                          "groups": json.loads(frame_json(groups))}, indent=1))
        _warn(st)
        return
    out.print(f"[bold]{run_id}[/bold]  {meta.get('name')}  status: {meta.get('status')}  "
              f"device: {meta.get('device')}")
    if meta.get("message"):
        out.print(f"message: {meta['message']}")
    out.print(json.dumps(meta.get("config", {}), indent=1))
    # short headers, rank left out (the rows are in rank order): nine columns in 80 characters
    out.print(frame_table(per_class, title="classes (final epoch)"))
    out.print(frame_table(groups, title="groups (final epoch; accuracy = mean over its classes)"))
    _warn(st)


def _run_finals(con, run_id: str):
    """Per class and per group: counts and final train / test accuracy and gap, from the
    generalisation_gap analysis (the class_results and group_results views)."""
    from imbtui.queries import get_query

    gap = get_query("generalisation_gap")
    con.register("final_gap", con.sql(gap.sql, params=gap.bind({"runs": [run_id]})).pl())
    per_class = con.sql("""
        SELECT g.class_id AS "class", c.class_name AS "name", c.train_count AS "train n",
               c.test_count AS "test n", c.grp AS "group", c.shot,
               g.train_acc AS "train acc", g.test_acc AS "test acc", g.gap
        FROM final_gap g JOIN classes c ON c.run_id = g.run_id AND c.class_id = g.class_id
        ORDER BY c.class_id""").pl()
    groups = con.sql("""
        SELECT g.grp AS "group", count(c.class_id) AS classes, g.train_count AS "train n",
               g.train_acc AS "train acc", g.test_acc AS "test acc", g.gap
        FROM final_gap g JOIN classes c ON c.run_id = g.run_id AND c.grp = g.grp
        WHERE g.class_id IS NULL
        GROUP BY ALL ORDER BY g.grp""").pl()
    con.unregister("final_gap")
    return per_class, groups


# ==== sql =========================================================================================

@app.command()
def sql(query: Annotated[str, typer.Argument(help="A read-only SQL query over the views runs, "
                                             "classes, steps, epochs.")],
        fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format (json: an array of "
                                         "objects).")] = Fmt.table,
        store: StoreOpt = None) -> None:
    """Run read-only SQL over the run store (DuckDB dialect).

    Docs: docs/analyses.md (the views: docs/store.md)
    """
    from imbtui.console import print_frame

    st = _store(store)
    frame = st.sql(query)
    _warn(st)
    print_frame(frame, fmt.value)


# ==== query / report ==============================================================================

class OutFmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def query(
    name: Annotated[Optional[str], typer.Argument(
        help="A named analysis (see --list) or the path of your own .sql file.",
        show_default=False)] = None,
    run: Annotated[Optional[list[str]], typer.Option(
        "--run", "-r", help="Only this run (id, unique prefix or name); repeatable. Default: all.",
        show_default=False)] = None,
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", help="KEY=VALUE, bound as the query parameter $KEY; repeatable.",
        show_default=False)] = None,
    fmt: Annotated[Optional[OutFmt], typer.Option(
        "--format", "-f", help="Output format. Default: table, or what --out's suffix says.",
        show_default=False)] = None,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the result to FILE (csv, json or parquet).",
        show_default=False)] = None,
    list_all: Annotated[bool, typer.Option(
        "--list", help="List the named analyses with the question each answers.")] = False,
    show_sql: Annotated[bool, typer.Option(
        "--show-sql", help="Print the analysis's SQL (to copy and change) and exit.")] = False,
    store: StoreOpt = None,
) -> None:
    """Run a named analysis from queries/ (imbtui query --list shows them).

    Docs: docs/analyses.md
    """
    from imbtui.queries import list_queries, load_query

    if list_all:
        from imbtui.api import queries_frame

        _emit(queries_frame(list_queries()), fmt, out_file, title="named analyses")
        return
    if name is None:
        raise UserError("give an analysis name; imbtui query --list shows them")
    q = load_query(name)
    if show_sql:
        sys.stdout.write(q.sql if q.sql.endswith("\n") else q.sql + "\n")
        return
    given = _query_params(param or [])
    st = _store(store)
    if run:
        if q.param("runs") is None:
            raise UserError(f"analysis {q.name!r} covers every run and takes no --run")
        if "runs" in given:
            raise UserError("give runs with --run or with --param runs=..., not both")
        given["runs"] = [_resolve_run(st, r) for r in run]
    if out_file is not None:
        _outside_store(out_file, st.root)
    frame = st.sql(q.sql, q.bind(given) or None)
    _warn(st)
    _emit(frame, fmt, out_file, title=q.name)


def _outside_store(path: Path, root: Path) -> None:
    """Readers never write into the store: a result file there would sit among the runs."""
    target, base = path.expanduser().resolve(), root.expanduser().resolve()
    if target == base or base in target.parents:
        raise UserError(f"{str(path)!r} is inside the run store {str(root)!r}; write results "
                        f"elsewhere")


def _query_params(items: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserError(f"--param expects KEY=VALUE, got {item!r}")
        if key in given:
            raise UserError(f"--param {key} given twice")
        given[key] = value
    return given


_SUFFIX_FMT = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _emit(frame, fmt: OutFmt | None, out_file: Path | None, title: str | None = None) -> None:
    """Print a result (table, csv, json) or write it to --out (csv, json, parquet)."""
    from imbtui.console import err, print_frame

    kind = fmt.value if fmt else (_SUFFIX_FMT.get(out_file.suffix.lower()) if out_file else "table")
    if kind is None:
        raise UserError(f"cannot tell the format of {str(out_file)!r} from its suffix; pass "
                        f"--format csv, json or parquet")
    if out_file is None:
        if kind == "parquet":
            raise UserError("--format parquet needs --out FILE")
        print_frame(_flat(frame) if kind == "csv" else frame, kind, title)
        return
    if kind == "table":
        raise UserError("--out writes csv, json or parquet: pass --format or a .csv, .json or "
                        ".parquet file name")
    _write_frame(frame, kind, out_file)
    err.print(f"wrote {frame.height} rows to {out_file}")


def _write_frame(frame, kind: str, path: Path) -> None:
    from imbtui.console import frame_json

    try:
        if kind == "parquet":
            frame.write_parquet(path)
        elif kind == "csv":
            _flat(frame).write_csv(path)
        else:
            path.write_text(frame_json(frame) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def _flat(frame):
    """CSV has no lists or structs: write such cells as JSON text."""
    import json

    import polars as pl

    nested = [c for c, t in frame.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    return frame.with_columns(pl.Series(c, [None if v is None else json.dumps(v, default=str)
                                            for v in frame[c].to_list()], dtype=pl.String)
                              for c in nested)


@app.command()
def report(
    runs: Annotated[Optional[list[str]], typer.Argument(
        help="Runs (ids, unique prefixes or names). Default: every run in the store.",
        show_default=False)] = None,
    threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Train accuracy at which a class counts as learned (onsets).")
                         ] = 0.5,
    early: Annotated[int, typer.Option(min=1, max=MAX_EPOCHS,
                                       help="How many first epochs count as early.")] = 2,
    fmt: Annotated[Fmt, typer.Option(
        "--format", "-f", help="table, or csv / json: one row per run with every number.")
                   ] = Fmt.table,
    png: Annotated[Optional[Path], typer.Option(
        "--png", help="Also write a figure of majority vs minority train and test accuracy per "
        "run, or per setting with error bars over its seeds (.png; .pdf and .svg work too).",
        show_default=False)] = None,
    store: StoreOpt = None,
) -> None:
    """The study's three findings, with numbers, for the given runs (and how they move).

    A setting run with several seeds shows mean ± 95 % t half-width (n=seeds).

    Docs: docs/analyses.md
    """
    from imbtui.api import RunStore
    from imbtui.console import out, print_frame
    from imbtui.report import changes, findings, legend, settings, table

    rs = RunStore(_store(store).root)
    ids = [_resolve_run(rs.store, r) for r in runs or []]
    frame = findings(rs, ids, threshold=threshold, early=early)
    _warn(rs.store)
    _missing_runs(ids, frame)
    if frame.height == 0:
        raise UserError(f"no run in {str(rs.store.root)!r} has an evaluated epoch yet")
    columns = settings(rs, frame, threshold, early)  # one per setting; seeds pooled in DuckDB
    if fmt is Fmt.table:
        out.print(table(columns, threshold, early))
        for line in legend(columns, frame, threshold) + changes(columns):
            out.print(line, highlight=False)
    else:
        print_frame(frame, fmt.value)
    if png is not None:
        _report_figure(rs, columns, png)


def _missing_runs(ids: list[str], frame) -> None:
    from imbtui.console import err

    for rid in sorted(set(ids) - set(frame["run_id"].to_list())):
        err.print(f"[yellow]warning:[/yellow] run {rid} has no evaluated epoch yet; left out")


def _report_figure(rs, columns, path: Path) -> None:
    """One panel per column of the report: the mean curves over its seeds, with error bars (95 %
    t-intervals, from DuckDB's ci95 macro) where it has several."""
    from imbtui.console import err
    from imbtui.figures import group_curves_figure
    from imbtui.report import curves_over_seeds

    curves = curves_over_seeds(rs, columns)
    panels = [(i, f"#{i} {r['dataset']}, ratio {r['ratio']:g}, {r['method']}"
                  + (f" (n={r['seeds']})" if r["seeds"] > 1 else ""))
              for i, r in enumerate(columns.to_dicts(), 1)]
    group_curves_figure(curves, panels, path, key="column")
    err.print(f"wrote figure {path}")


# ==== browse ======================================================================================
