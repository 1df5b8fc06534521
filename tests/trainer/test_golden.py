"""The trainer records what it recorded before: the default run's first 300 steps, row by row and
bit for bit, against tests/golden/<kernel set>/*.parquet (made by tests/golden/make_golden.py).

Rows are compared only under the CPU kernel set that made them (`make test` runs this module
under the machine's own kernels and again under ATEN_CPU_CAPABILITY=default, so CI checks both):
300 SGD steps amplify a kernel's last-bit differences into runs that end 10-60 % apart, so no
tolerance could tell a refactor's mistake from another CPU. The run pins the libraries below ATen
(MKL's code path, oneDNN, NNPACK: tests/golden/make_golden.py), which otherwise pick their code
by CPU; it runs in a process of its own, which MKL needs for that. Under a kernel set
with no rows the test skips and says how to make them.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.golden.make_golden import TABLES, folder, meta, run_pinned


@pytest.fixture(scope="module")
def golden() -> dict[str, pl.DataFrame]:
    where = folder()
    if not (where / "meta.json").exists():
        pytest.skip(f"no golden rows for the {meta()['capability']} kernel set (this CPU); "
                    f"make them with: python tests/golden/make_golden.py")
    made = json.loads((where / "meta.json").read_text())
    if made["torch"] != meta()["torch"]:
        pytest.skip(f"golden rows made with torch {made['torch']}, this is {meta()['torch']}")
    return {t: pl.read_parquet(where / f"{t}.parquet") for t in TABLES}


@pytest.fixture(scope="module")
def fresh(golden, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    out = tmp_path_factory.mktemp("golden")
    run_pinned(out)
    return {t: pl.read_parquet(out / f"{t}.parquet") for t in TABLES}


@pytest.mark.parametrize("table", TABLES)
def test_rows_equal_the_golden_rows(golden, fresh, table: str) -> None:
    want, got = golden[table], fresh[table]
    assert got.columns == want.columns and got.height == want.height, table
    for col in want.columns:
        assert got[col].equals(want[col]), f"{table}.{col} differs from the golden rows"
