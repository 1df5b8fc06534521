"""The trainer records what it recorded before: the default run's first 300 steps against
tests/golden/<kernel set>/*.parquet (made by tests/golden/make_golden.py, which says why there are
two comparisons).

- On any CPU: every table's rows of the first `PORTABLE_STEPS` steps, floats to `RTOL`, whole
  numbers and text exactly. A refactor's mistake shows from the first step; another CPU's last-bit
  differences stay below 2e-6 there.
- On the CPU and kernel set that made the rows: all rows, bit for bit.

`make test` runs this module under the machine's own kernels and again under
ATEN_CPU_CAPABILITY=default. Under a kernel set with no rows the tests skip and say how to make
them.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tests.golden.make_golden import ATOL, PORTABLE_STEPS, RTOL, TABLES, folder, meta, run_apart


@pytest.fixture(scope="module")
def made() -> dict[str, str]:
    where = folder()
    if not (where / "meta.json").exists():
        pytest.skip(f"no golden rows for the {meta()['capability']} kernel set; "
                    f"make them with: python tests/golden/make_golden.py")
    made = json.loads((where / "meta.json").read_text())
    if made["torch"] != meta()["torch"]:
        pytest.skip(f"golden rows made with torch {made['torch']}, this is {meta()['torch']}")
    return made


@pytest.fixture(scope="module")
def golden(made) -> dict[str, pl.DataFrame]:
    return {t: pl.read_parquet(folder() / f"{t}.parquet") for t in TABLES}


@pytest.fixture(scope="module")
def fresh(made, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    out = tmp_path_factory.mktemp("golden")
    run_apart(out)
    return {t: pl.read_parquet(out / f"{t}.parquet") for t in TABLES}


def early(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("step") < PORTABLE_STEPS)


@pytest.mark.parametrize("table", TABLES)
def test_first_steps_match_on_any_cpu(golden, fresh, table: str) -> None:
    want, got = early(golden[table]), early(fresh[table])
    assert got.columns == want.columns and got.height == want.height > 0, table
    for col in want.columns:
        w, g = want[col], got[col]
        if w.dtype.is_float():
            a, b = w.to_numpy().astype(np.float64), g.to_numpy().astype(np.float64)
            assert (np.isnan(a) == np.isnan(b)).all(), f"{table}.{col}: NULLs differ"
            ok = np.isnan(a) | np.isclose(b, a, rtol=RTOL, atol=ATOL)
            assert ok.all(), (f"{table}.{col} differs from the golden rows: first at row "
                              f"{int(np.argmin(ok))}, {b[~ok][0]!r} vs {a[~ok][0]!r}")
        else:
            assert g.equals(w), f"{table}.{col} differs from the golden rows"


@pytest.mark.parametrize("table", TABLES)
def test_all_rows_equal_bit_for_bit_on_the_cpu_that_made_them(made, golden, fresh,
                                                              table: str) -> None:
    if made.get("cpu") != meta()["cpu"]:
        pytest.skip(f"rows made on {made.get('cpu')}, this is {meta()['cpu']}: compared over "
                    f"the first {PORTABLE_STEPS} steps only; to check a refactor bit for bit, "
                    "make rows on this CPU before it (python tests/golden/make_golden.py)")
    want, got = golden[table], fresh[table]
    assert got.columns == want.columns and got.height == want.height, table
    for col in want.columns:
        assert got[col].equals(want[col]), f"{table}.{col} differs from the golden rows"
