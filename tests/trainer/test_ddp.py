"""Data-parallel training under torchrun (trainer.distributed and its hooks in the loop).

The central test trains the same short run twice: once in one process, once under
`python -m torch.distributed.run --nproc_per_node=2` with gloo on the CPU, at the same global batch.
The single-process run is the independent reference: every stored per-class sum of the two runs
must agree to float tolerance, and the two-process store must hold exactly one run. The MLP has no
BatchNorm, whose per-rank batch statistics would make the two differ by design.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from imbtui.store import Store
from trainer import distributed
from trainer.data import DataError
from trainer.losses import build_loss
from trainer.sink import MemorySink, NullSink

from tests.conftest import torchrun_train
from tests.tolerance import rel

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
# A short run: MNIST-1D at ratio 100 has 9,922 training samples, 77 steps of 128 per epoch.
RUN = ["--ratio", "100", "--model", "mlp", "--epochs", "1", "--max-steps", "30",
       "--batch-size", "128", "--device", "cpu", "-q"]
BATCH, STEPS, C = 128, 30, 10


def start(cmd: list[str], **kw) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 cores shared by up to 3 trainers
    return subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# Every table a run records, in a fixed row order (its key).
KEYS = {"steps": "step, class_id", "epochs": "epoch, split, class_id", "probes": "step, grp",
        "samples": "step, pos", "geometry": "epoch, split, class_id",
        "geometry_summary": "epoch, split"}


def tables(root: Path) -> tuple[dict, dict[str, pl.DataFrame]]:
    st = Store(root)
    con = st.connect()
    runs = con.sql("SELECT run_id, status, device, config FROM runs").pl()
    assert runs.height == 1, f"expected exactly one run in {root}, found {runs.height}"
    return runs.row(0, named=True), {
        t: con.sql(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY {k}").pl()
        for t, k in KEYS.items()}


# ==== one process: every helper is a no-op ========================================================

def test_helpers_do_nothing_without_a_process_group() -> None:
    assert not distributed.active() and distributed.world_size() == 1 and distributed.rank() == 0
    t = torch.arange(10.0)
    assert distributed.shard(t) is t
    assert distributed.eval_shard(t, t)[0] is t
    assert distributed.dist_sum_(t) is t and t.tolist() == list(range(10))
    assert distributed.dist_gather(t) is t
    distributed.check_batch(127)  # any batch splits over one process
    sink = MemorySink()
    assert distributed.rank_sink(sink) is sink
    dev = torch.device("cpu")
    assert distributed.wrap(torch.nn.Linear(2, 2), dev).__class__ is torch.nn.Linear
    assert distributed.setup(dev) == dev and not distributed.active()


# ==== the weighted mean under data parallelism, in one process ==================================

def test_weighted_loss_divides_by_the_global_weight_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    """A world of two ranks played by hand: each rank's weighted loss, its gradient averaged over
    the ranks as DDP does, must be the one-process weighted mean over the whole batch."""
    # weighted-ce on counts (3, 1): w = (1/2, 3/2). Rank 0 holds classes (0, 0): weight sum 1;
    # rank 1 holds (1, 0): weight sum 2. The global batch's weight sum is 3.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    y = torch.tensor([0, 0, 1, 0])
    theta0 = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    local_sums = {0: 1.0, 1: 2.0}
    reduced = []

    def fake_sum_(t: torch.Tensor) -> torch.Tensor:  # all_reduce(SUM) of the two ranks' sums
        assert not t.requires_grad
        assert float(t) == local_sums[rank]  # a sum of two float32 weights in {0.5, 1.5}: exact
        reduced.append(float(t))
        return t.fill_(3.0)

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "dist_sum_", fake_sum_)
    fn = build_loss("weighted-ce", [3, 1], torch.device("cpu"))
    losses, grads = [], []
    for rank, part in ((0, slice(0, 2)), (1, slice(2, 4))):
        theta = theta0.clone().requires_grad_()
        value = fn(x[part] @ theta.T, y[part], 1)
        value.backward()
        losses.append(float(value.detach()))
        grads.append(theta.grad)
    assert reduced == [1.0, 2.0]  # each rank reduced its own weight sum, once

    # the one-process reference, by hand: sum_i w_i l_i / sum_i w_i and its gradient
    # sum_i w_i (softmax(z_i) - e_{y_i}) x_i^T / sum_i w_i
    z = x @ theta0.T
    w = torch.tensor([0.5, 0.5, 1.5, 0.5])
    ce = -torch.log_softmax(z, dim=1)[torch.arange(4), y]
    want_loss = float((w * ce).sum() / 3.0)
    d = (torch.softmax(z, dim=1) - torch.eye(2)[y]) * w[:, None] / 3.0
    want_grad = d.T @ x
    # float32 sums of 4 samples' terms each side, in other orders (DDP averages the ranks)
    assert sum(losses) / 2 == pytest.approx(want_loss, rel=rel(4))
    torch.testing.assert_close((grads[0] + grads[1]) / 2, want_grad, rtol=0,
                               atol=rel(4) * float(want_grad.abs().max()))
    # dividing by each rank's own weight sum (the defect) would have given something else
    wrong = (d[:2] * 3.0 / 1.0).T @ x[:2] / 2 + (d[2:] * 3.0 / 2.0).T @ x[2:] / 2
    assert not torch.allclose(wrong, want_grad, rtol=1e-3)


def test_weighted_loss_in_a_world_of_one_calls_no_collective(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No process group, or a group of one rank: the plain weighted mean, no all_reduce."""
    def refuse(*args, **kwargs):
        raise AssertionError("a collective was called in a world of one")

    monkeypatch.setattr(torch.distributed, "all_reduce", refuse)
    logits, y = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    a, b = math.log(1 + math.exp(-1)), math.log(2.0)
    want = (0.5 * a + 1.5 * b) / 2.0
    fn = build_loss("weighted-ce", [3, 1], torch.device("cpu"))
    assert float(fn(logits, y, 1)) == pytest.approx(want, rel=rel(2))  # float32, 2 samples
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0,
                                         world_size=1)
    try:
        assert distributed.active() and distributed.world_size() == 1
        assert float(fn(logits, y, 1)) == pytest.approx(want, rel=rel(2))
    finally:
        torch.distributed.destroy_process_group()
    assert not distributed.active()


# ==== two processes: the collectives ===============================================================

COLLECTIVES = r"""
import json, sys
import torch
from trainer import distributed as d
from trainer.data import DataError

d.setup(torch.device("cpu"))
r, w = d.rank(), d.world_size()
out = {"rank": r, "world": w, "backend": d.backend()}
out["shard"] = d.shard(torch.arange(8)).tolist()
# 7 rows over 2 ranks: the slices must cover every row once, in order
out["eval_cover"] = d.dist_gather(d.eval_shard(torch.arange(7))[0]).tolist()
# unequal row counts: rank r holds r + 1 rows of value r
out["gather"] = d.dist_gather(torch.full((r + 1, 2), float(r))).tolist()
buf = torch.tensor([[[r + 1.0, 0.25, 10.0 * (r + 1)]]])  # columns: a sum, a shared value, a sum
d.reduce_stats_(buf, ("n", "g", "s"), same=("g",))
out["stats"] = buf.tolist()
m = torch.arange(6.0).reshape(2, 3) * (r + 1)
d.dist_sum_(m[:, 1:])  # a non-contiguous view is summed in place
out["view"] = m.tolist()
try:
    d.check_batch(3)
    out["refused"] = None
except DataError as exc:
    out["refused"] = str(exc)
out["sink"] = type(d.rank_sink(object())).__name__
d.teardown()
out["after"] = d.active()
json.dump(out, open(f"{sys.argv[1]}/rank{r}.json", "w"))
"""


@pytest.mark.slow
def test_collectives_across_two_ranks(tmp_path: Path) -> None:
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    rc, _, err = finish(start([*TORCHRUN, "--nproc_per_node=2", str(script), str(tmp_path)]))
    assert rc == 0, err
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, g in enumerate(got):
        assert (g["rank"], g["world"], g["backend"]) == (r, 2, "gloo")
        assert g["shard"] == [[0, 1, 2, 3], [4, 5, 6, 7]][r]
        assert g["eval_cover"] == list(range(7))
        assert g["gather"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert g["stats"] == [[[1.0 + 2.0, 0.25, 10.0 + 20.0]]]
        assert g["view"] == [[0.0 * (r + 1), 3.0, 6.0], [3.0 * (r + 1), 12.0, 15.0]]
        assert g["refused"] == ("--batch-size 3 does not split evenly over 2 processes: "
                                "use a multiple of 2")
        assert g["sink"] == ["object", NullSink.__name__][r]
        assert g["after"] is False


# ==== two processes: a real run equals the single-process run =====================================

def one_and_two_ranks(tmp_path: Path, run: list[str]) -> tuple[Any, Any]:
    """The same `imbtui train` on one process (store tmp/one) and under torchrun with two ranks
    (tmp/two), at once; each store's (run row, tables)."""
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = start([sys.executable, "-m", "imbtui", "train", *run, "--store", str(one)])
    rc, err = torchrun_train(run, two)
    assert rc == 0, err
    rc, _, err = finish(p1)
    assert rc == 0, err
    assert len(list((two / "runs").iterdir())) == 1  # one run folder, not one per rank
    return tables(one), tables(two)


@pytest.mark.slow
def test_torchrun_two_ranks_store_the_single_process_sums(tmp_path: Path) -> None:
    (run1, t1), (run2, t2) = one_and_two_ranks(tmp_path, RUN)
    assert json.loads(run2["config"])["world_size"] == 2
    assert json.loads(run1["config"])["world_size"] == 1
    assert run2["status"] == "finished" and run2["device"] == "cpu"

    # the global batch: every step holds BATCH samples over the C classes, in both runs
    steps = t2["steps"]
    assert steps.height == STEPS * C
    assert steps.group_by("step").agg(pl.col("n").sum())["n"].to_list() == [BATCH] * STEPS
    assert t2["samples"].height == STEPS * BATCH  # gathered from both ranks, not summed
    assert t2["epochs"].height == 2 * 2 * C  # epochs 0 and 1, train and test
    for table in KEYS:
        assert t2[table].height > 0, table
        _same(t1[table], t2[table], table)


# With class weights every rank's loss is a weighted mean sum_i w_i l_i / sum_i w_i over its own
# share of the batch; at ratio 100 the two shares hold different weight sums, so dividing by the
# rank's own sum would make the two-process run leave the single-process one from the first step.
WEIGHTED = {"ce-drw": ["--loss", "ce", "--drw", "0"],       # class-balanced weights from epoch 1
            "ldam-drw": ["--loss", "ldam", "--drw", "0"],   # LDAM margins and those weights
            "weighted-ce": ["--loss", "weighted-ce"]}       # inverse-frequency weights


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(WEIGHTED))
def test_torchrun_two_ranks_match_one_process_with_class_weights(tmp_path: Path,
                                                                  loss: str) -> None:
    (run1, t1), (run2, t2) = one_and_two_ranks(tmp_path, [*RUN, *WEIGHTED[loss]])
    assert json.loads(run2["config"])["world_size"] == 2
    assert run2["status"] == run1["status"] == "finished"
    steps = t2["steps"]
    assert steps.height == STEPS * C
    assert steps.group_by("step").agg(pl.col("n").sum())["n"].to_list() == [BATCH] * STEPS
    # the two ranks' shares hold different weight sums (else the test would prove nothing): the
    # weights worked out here from the class counts, (1 - b) / (1 - b^n) with b = 0.9999 for DRW,
    # 1 / n for weighted-ce (their scale cancels in a ratio)
    n = Store(tmp_path / "one").connect().sql("SELECT train_count FROM classes ORDER BY class_id").pl()
    n = n["train_count"].to_numpy().astype(np.float64)
    w = 1.0 / n if loss == "weighted-ce" else (1 - 0.9999) / (1 - 0.9999 ** n)
    smp = t2["samples"]
    share = (smp["pos"].to_numpy() >= BATCH // 2).astype(int)  # rank 1 holds the second half
    sums = np.zeros((STEPS, 2))
    np.add.at(sums, (smp["step"].to_numpy(), share), w[smp["class_id"].to_numpy()])
    assert (np.abs(sums[:, 0] - sums[:, 1]) > 0.1 * sums.max(axis=1)).any()
    for table in KEYS:
        assert t2[table].height > 0, table
        _same(t1[table], t2[table], table)


def _same(a: pl.DataFrame, b: pl.DataFrame, table: str) -> None:
    """Equal row for row: exactly in counts, ids and labels; to float tolerance in the rest."""
    assert a.columns == b.columns and a.height == b.height, table
    for col in a.columns:
        if a[col].dtype.is_float():
            # STEPS steps of float32 sums over the BATCH samples, which the all-reduce adds up
            # in another order: the difference reaches every value through every step
            tol = rel(STEPS * BATCH)
            np.testing.assert_allclose(b[col].to_numpy(), a[col].to_numpy(), rtol=tol,
                                       atol=tol, equal_nan=True, err_msg=f"{table}.{col}")
        else:
            assert a[col].to_list() == b[col].to_list(), f"{table}.{col}"


# A torchrun worker that has used DDP, ending the way the CLI ends one (`distributed.leave`), under
# the conditions that make gloo's shutdown race certain: its worker threads at the lowest priority,
# on one core, which a busy loop holds too. Ending it with a plain interpreter exit instead aborted
# 9 launches in 10 here ("terminate called without an active exception"); with `leave`, 0 in 10.
WORKER = """
import os, sys, torch
from trainer import distributed
device = distributed.setup(torch.device("cpu"))
model = distributed.wrap(torch.nn.Linear(64, 8), device)
model(torch.randn(16, 64)).sum().backward()
del model
core = int(sys.argv[1])
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{tid}/comm") as f:
        name = f.read().strip()
    os.sched_setaffinity(int(tid), {core})
    if name.startswith("pt_gloo"):
        os.setpriority(os.PRIO_PROCESS, int(tid), 19)
for _ in range(20):
    distributed.dist_sum_(torch.ones(4096))
distributed.teardown()
# One write() of one short line: the ranks share the pipe, and a line written in pieces
# (print's separate writes when stdout is unbuffered) can interleave with the other rank's.
sys.stdout.write(f"rank {distributed.env_rank()} done\\n")
sys.stdout.flush()
distributed.leave(0)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_a_worker_that_used_ddp_exits_cleanly_under_load(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    core = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}})"
                            "\nwhile True: pass"])
    try:
        for _ in range(4):
            proc = subprocess.run([*TORCHRUN, "--nproc_per_node=2", str(script), str(core)],
                                  cwd=REPO, text=True, capture_output=True, timeout=120,
                                  env={**os.environ, "OMP_NUM_THREADS": "1",
                                       "PYTHONPATH": str(REPO)})
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert sorted(proc.stdout.split("\n"))[-2:] == ["rank 0 done", "rank 1 done"]
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.slow
def test_a_batch_that_does_not_split_is_refused_once(tmp_path: Path) -> None:
    rc, out, err = finish(start([*TORCHRUN, "--nproc_per_node=2", "-m", "imbtui", "train",
                                 *[a if a != str(BATCH) else "127" for a in RUN],
                                 "--store", str(tmp_path)]))
    line = ("imbtui: error: --batch-size 127 does not split evenly over 2 processes: "
            "use a multiple of 2")
    assert rc != 0
    assert err.splitlines().count(line) == 1  # rank 0 says it; rank 1 exits quietly
    assert "Traceback" not in err.split(line)[0]  # ours is the first thing said, not a traceback
    assert not (tmp_path / "runs").exists()


def test_check_batch_names_the_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    distributed.check_batch(128)
    with pytest.raises(DataError, match=r"^--batch-size 130 does not split evenly over 4 "):
        distributed.check_batch(130)


def test_more_processes_than_gpus_is_refused_on_every_rank(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for local in ("0", "1"):  # rank 0 too, although its own GPU exists: all ranks say the same
        monkeypatch.setenv("LOCAL_RANK", local)
        with pytest.raises(DataError, match=r"^2 processes on this node but 1 GPU\(s\) visible"):
            distributed._local_gpu()


# ==== NCCL on a GPU (world size 1) =================================================================

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nccl_world_size_one_records_the_run(tmp_path: Path) -> None:
    gpu_run = [a if a != "cpu" else "cuda" for a in RUN]
    rc, _, err = finish(start([*TORCHRUN, "--nproc_per_node=1", "-m", "imbtui", "train",
                               *gpu_run, "--store", str(tmp_path / "ddp")]))
    assert rc == 0, err
    rc, _, err = finish(start([sys.executable, "-m", "imbtui", "train", *gpu_run,
                               "--store", str(tmp_path / "one")]))
    assert rc == 0, err
    run, ddp = tables(tmp_path / "ddp")
    _, one = tables(tmp_path / "one")
    assert run["device"] == "cuda:0" and json.loads(run["config"])["world_size"] == 1
    steps = ddp["steps"]
    assert steps.group_by("step").agg(pl.col("n").sum())["n"].to_list() == [BATCH] * STEPS
    assert ddp["samples"].height == STEPS * BATCH and ddp["probes"].height > 0
    for table, col in (("steps", "loss_sum"), ("epochs", "loss_sum"), ("samples", "loss")):
        # on CUDA, cuDNN's backward kernels add with atomics (no fixed order) and each run picks
        # its own: rel(STEPS * BATCH) ~ 4.6e-4 per value, with room for the kernels' choice
        np.testing.assert_allclose(ddp[table][col].to_numpy(), one[table][col].to_numpy(),
                                   rtol=1e-3, atol=1e-3, err_msg=table)


class _Left(Exception):
    pass


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_the_cli_leaves_a_torchrun_worker_through_distributed_leave(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], outcome: str) -> None:
    """Under torchrun the entry point ends through `leave` with main's exit code (1 and the
    traceback when main raises); outside torchrun through sys.exit as usual."""
    import imbtui.cli as cli

    def main() -> int:
        if outcome == "raises":
            raise RuntimeError("boom")
        return 3

    def leave(code: int) -> None:
        raise _Left(code)

    monkeypatch.setattr(cli, "main", main)
    monkeypatch.setattr(distributed, "leave", leave)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(k, "0" if k != "WORLD_SIZE" else "2")
    with pytest.raises(_Left) as left:
        cli.run()
    assert left.value.args == ((3,) if outcome == "returns" else (1,))
    if outcome == "raises":
        assert "RuntimeError: boom" in capsys.readouterr().err
    monkeypatch.delenv("RANK")
    with pytest.raises(SystemExit if outcome == "returns" else RuntimeError) as plain:
        cli.run()
    if outcome == "returns":
        assert plain.value.code == 3
