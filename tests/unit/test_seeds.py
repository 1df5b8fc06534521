"""Two seeds, two sources of variance: --subset-seed picks which samples the long-tailed subset
keeps, --seed the initialisation, the batch order and the augmentation. Runs that differ only in
--seed train on exactly the same samples (as kaidic/LDAM-DRW keeps its subset at rand_number=0,
imbalance_cifar.py), and the run's config records both."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from trainer.data import ArrayDataset
from trainer.loop import TrainConfig, train, training_subset
from trainer.sink import MemorySink

PER_CLASS, N_CLASSES, LENGTH = 40, 10, 40  # MNIST-1D's shape (1D signals of 40), 400 samples


def small_dataset() -> ArrayDataset:
    """A balanced 10-class set, labels interleaved so that sample ids do not sort by class."""
    rng = np.random.default_rng(123)
    y = np.tile(np.arange(N_CLASSES), PER_CLASS).astype(np.int64)
    x = rng.normal(size=(len(y), LENGTH)).astype(np.float32)
    yt = np.arange(N_CLASSES, dtype=np.int64)
    return ArrayDataset("mnist1d", x, y, x[:N_CLASSES], yt, [str(c) for c in range(N_CLASSES)])


def test_the_training_seed_does_not_move_the_subset() -> None:
    ds = small_dataset()
    base = TrainConfig(ratio=4.0, seed=0, subset_seed=0)
    counts, idx = training_subset(base, ds)
    for seed in (1, 2, 12345):
        c, i = training_subset(dataclasses.replace(base, seed=seed), ds)
        assert c == counts and np.array_equal(i, idx), seed  # the same sample ids, exactly
    # the kept counts are the profile's, class by class (integer equality)
    assert np.bincount(ds.y_train[idx], minlength=N_CLASSES).tolist() == counts
    assert counts[0] == PER_CLASS and counts[-1] == PER_CLASS // 4


def test_the_subset_seed_moves_the_subset_and_keeps_the_counts() -> None:
    ds = small_dataset()
    counts, idx = training_subset(TrainConfig(ratio=4.0, subset_seed=0), ds)
    for subset_seed in (1, 2, 3):
        c, i = training_subset(TrainConfig(ratio=4.0, subset_seed=subset_seed), ds)
        assert c == counts
        assert np.bincount(ds.y_train[i], minlength=N_CLASSES).tolist() == counts
        assert set(i.tolist()) != set(idx.tolist()), subset_seed
    # ratio 1 keeps everything whatever the subset seed
    _, whole = training_subset(TrainConfig(ratio=1.0, subset_seed=7), ds)
    assert np.array_equal(whole, np.arange(len(ds.y_train)))


def run_once(monkeypatch: pytest.MonkeyPatch, **cfg) -> MemorySink:
    """One step over the whole subset (batch = every kept sample) on the small set; every
    sample's presentation is in the `samples` table."""
    ds = small_dataset()
    monkeypatch.setattr("trainer.loop.load_dataset", lambda name, data_dir=None: ds)
    n_train = len(training_subset(TrainConfig(ratio=4.0, **cfg), ds)[1])
    sink = MemorySink()
    result = train(TrainConfig(ratio=4.0, epochs=1, batch_size=n_train, device="cpu", model="mlp",
                               dynamics="full", **cfg), sink)
    assert result.status == "finished" and result.steps == 1
    return sink


def test_runs_record_both_seeds_and_train_on_the_same_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = run_once(monkeypatch, seed=0, subset_seed=0)
    b = run_once(monkeypatch, seed=1, subset_seed=0)
    c = run_once(monkeypatch, seed=0, subset_seed=1, cb_reduction="mean")
    for sink, seed, subset_seed in ((a, 0, 0), (b, 1, 0), (c, 0, 1)):
        config = sink.meta["config"]
        assert (config["seed"], config["subset_seed"]) == (seed, subset_seed)
    assert a.meta["config"]["cb_reduction"] == "weighted-mean"
    assert c.meta["config"]["cb_reduction"] == "mean"

    def presented(sink: MemorySink) -> list[int]:
        return sorted(sink.table("samples")["sample_id"].tolist())

    # the same sample ids (the seed only changed the initialisation and the order) ...
    assert presented(a) == presented(b)
    assert presented(a) == sorted(training_subset(TrainConfig(ratio=4.0), small_dataset())[1])
    assert a.table("classes")["train_count"].tolist() == b.table("classes")["train_count"].tolist()
    # ... and another subset seed, other samples in the same counts
    assert presented(c) != presented(a)
    assert c.table("classes")["train_count"].tolist() == a.table("classes")["train_count"].tolist()


@pytest.fixture
def small_cli(monkeypatch: pytest.MonkeyPatch):
    """`imbtui.cli.main` in this process, training on the small set (no torch start-up per call);
    the SIGTERM handler `train` installs is put back afterwards."""
    import signal

    from imbtui.cli import main

    ds = small_dataset()
    monkeypatch.setattr("trainer.loop.load_dataset", lambda name, data_dir=None: ds)
    monkeypatch.setattr("trainer.data.load_dataset", lambda name, data_dir=None: ds)
    handler = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, handler)


def test_cli_records_both_seeds_and_the_reduction(small_cli, tmp_path, capsys) -> None:
    import json

    store = tmp_path / "s"
    assert small_cli(["train", "--ratio", "4", "--seed", "3", "--subset-seed", "5",
                      "--cb-reduction", "mean", "--loss", "cb", "--model", "mlp",
                      "--batch-size", "16", "--max-steps", "1", "--dynamics", "off",
                      "--device", "cpu", "--store", str(store), "-q"]) == 0
    (run,) = (store / "runs").iterdir()
    config = json.loads((run / "run.json").read_text())["config"]
    assert (config["seed"], config["subset_seed"], config["cb_reduction"]) == (3, 5, "mean")
    capsys.readouterr()
    assert small_cli(["train", "--cb-reduction", "sum", "--store", str(store)]) == 2
    assert "--cb-reduction" in capsys.readouterr().err
    assert small_cli(["train", "--subset-seed", "-1", "--store", str(store)]) == 2
    assert "--subset-seed" in capsys.readouterr().err


def test_sweep_keeps_one_subset_seed_for_every_run(small_cli, tmp_path, capsys) -> None:
    def argv_of(line: str) -> dict[str, str]:
        words = line.split()
        return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}

    store = tmp_path / "s"
    assert small_cli(["sweep", "--ratio", "4", "--seed", "0", "1", "2", "--subset-seed", "4",
                      "--epochs", "1", "--store", str(store), "--dry-run",
                      "--cb-reduction", "mean"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [(a["--seed"], a["--subset-seed"], a["--cb-reduction"])
            for a in map(argv_of, lines)] == [("0", "4", "mean"), ("1", "4", "mean"),
                                              ("2", "4", "mean")]
    # without --subset-seed the runs take train's default (0): no argument is added
    assert small_cli(["sweep", "--ratio", "4", "--seed", "0", "1", "--epochs", "1", "--store",
                      str(store), "--dry-run"]) == 0
    assert "--subset-seed" not in capsys.readouterr().out
    # the Slurm script's tasks carry it too
    script = tmp_path / "sweep.sbatch"
    assert small_cli(["sweep", "--ratio", "4", "--seed", "0", "1", "--subset-seed", "4",
                      "--epochs", "1", "--store", str(store), "--emit", "slurm", "--out",
                      str(script)]) == 0
    tasks = [line for line in script.read_text().splitlines() if ") ARGS=(" in line]
    assert len(tasks) == 2 and all("--subset-seed 4" in t for t in tasks)
