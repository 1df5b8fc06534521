"""The CLI's contract for bad input: one line on stderr, exit 2, the store untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, imbtui
from tests.store.test_store import tree_digest

BAD = [
    (["train", "--ratio", "0.5"], "--ratio"),
    (["train", "--ratio", "abc"], "--ratio"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--dataset", "imagenet-9000"], "unknown dataset"),
    (["train", "--profile", "zipf"], "--profile"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--profile", "step", "--minority-fraction", "1.5"], "minority-fraction"),
    (["sql", "SELEC * FROM runs"], "syntax error"),
    (["sql", "SELECT * FROM no_such_table"], "no_such_table"),
    (["sql", "DROP VIEW runs"], "read-only"),
    (["show", "no-such-run"], "unknown run"),
    (["show", "../../etc"], "unknown run"),
    (["frobnicate"], "No such command"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(trained_store: Path, args: list[str], needle: str) -> None:
    before = tree_digest(trained_store)
    proc = imbtui(*args, "--store", str(trained_store), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert tree_digest(trained_store) == before


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "notadir"
    f.write_text("x")
    for args in (["runs"], ["sql", "SELECT 1"], ["train", "--max-steps", "1"]):
        proc = imbtui(*args, "--store", str(f), check=False)
        assert proc.returncode == 2 and "is a file" in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1


def test_store_from_environment(trained_store: Path) -> None:
    proc = imbtui("sql", "SELECT count(*) AS n FROM runs", "--format", "csv",
                  env={"IMBTUI_STORE": str(trained_store)})
    assert proc.stdout.split() == ["n", "1"]


def test_sql_formats(trained_store: Path) -> None:
    q = "SELECT class_id, train_count FROM classes ORDER BY class_id LIMIT 2"
    csv = imbtui("sql", q, "--format", "csv", "--store", str(trained_store)).stdout
    assert csv.split() == ["class_id,train_count", "0,4000", "1,2397"]
    table = imbtui("sql", q, "--store", str(trained_store)).stdout
    assert "train_count" in table and "2397" in table


def test_runs_and_show(trained_store: Path) -> None:
    listing = imbtui("runs", "--store", str(trained_store)).stdout
    assert "r100" in listing and "finished" in listing
    import json

    (run,) = json.loads(imbtui("runs", "--json", "--store", str(trained_store)).stdout)
    assert (run["ratio"], run["method"]) == (100.0, "ce")
    # ratio and method columns when the terminal has room for them
    wide = imbtui("runs", "--store", str(trained_store), env={"COLUMNS": "120"}).stdout
    header = next(line for line in wide.splitlines() if "run_id" in line)
    assert header.split() == [
        "run_id", "name", "status", "ratio", "method", "epochs", "bal", "maj", "min"]
    assert "method" not in imbtui("runs", "--store", str(trained_store),
                                  env={"COLUMNS": "80"}).stdout
    shown = imbtui("show", run["run_id"][:15], "--store", str(trained_store)).stdout
    assert run["run_id"] in shown and "minority" in shown and "4000" in shown
    assert "r100" in imbtui("show", "r100", "--store", str(trained_store)).stdout


def test_help_is_fast_and_torch_free() -> None:
    code = ("import sys, imbtui.cli\n"
            "imbtui.cli.main(['--help'])\n"
            "print('torch' in sys.modules, 'textual' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip().splitlines()[-1] == "False False"


def test_python_dash_m() -> None:
    proc = subprocess.run([sys.executable, "-m", "imbtui", "--help"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_sql_nested_columns_in_csv_and_json(trained_store: Path) -> None:
    q = "SELECT [1, 2] AS a, {'x': 1} AS b, 3 AS c"
    csv = imbtui("sql", q, "--format", "csv", "--store", str(trained_store)).stdout
    assert csv.splitlines() == ['a,b,c', '"[1, 2]","{""x"": 1}",3']
    import json

    assert json.loads(imbtui("sql", q, "--format", "json", "--store", str(trained_store)).stdout) \
        == [{"a": [1, 2], "b": {"x": 1}, "c": 3}]


def test_a_float_column_has_one_number_of_decimals() -> None:
    from imbtui.console import column_format

    def shown(values: list) -> list[str]:
        return [column_format(values)(v) for v in values]

    assert shown([0.99, 0.8223, None]) == ["0.990", "0.822", ""]          # largest < 10: 3
    assert shown([123.44, 1.5, float("nan")]) == ["123.4", "1.5", "nan"]  # 3 digits: 1 more
    assert shown([12345.6, 2.0]) == ["12346", "2"]                        # 5 digits: none
    assert shown([0.5, 2e-5]) == ["0.5", "2.000e-05"]                     # tiny: per value
    assert shown([3e6, 1.0]) == ["3e+06", "1"]                            # huge: per value


def test_a_table_too_wide_for_the_terminal_says_so_on_stderr(trained_store: Path) -> None:
    wide = "SELECT run_id, class_id, class_name, train_count, test_count, rank, grp, shot FROM classes"
    narrowed = imbtui("sql", wide, "--store", str(trained_store), env={"COLUMNS": "80"})
    assert "columns narrowed to fit 80 characters" in narrowed.stderr
    assert "narrowed" not in narrowed.stdout  # stdout holds the table alone
    roomy = imbtui("sql", wide, "--store", str(trained_store), env={"COLUMNS": "200"})
    assert "narrowed" not in roomy.stderr and "test_count" in roomy.stdout
