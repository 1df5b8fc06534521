"""Per-sample records: the recorder against per-sample math, a real run's rows against its own step
rows and dataset, and the memorisation and cartography analyses against hand-made sequences."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from imbtui.queries import get_query
from tests.tolerance import approx64, rel
from imbtui.store import RunWriter, Store
from trainer.data import dataset_counts, load_dataset, long_tailed_indices
from tests.trainer.step_inputs import classifier, features
from trainer.dynamics import SampleRecorder, StepRecorder
from trainer.loop import TrainConfig, train
from trainer.sink import MemorySink


def test_samples_get_their_values_whoever_settles_the_steps() -> None:
    """Draining the step rows settles them; the per-sample rows of those steps get their values
    then too, with no separate call to forget."""
    samples = SampleRecorder(torch.device("cpu"))
    rec = StepRecorder(3, 2, torch.device("cpu"), classifier(3), samples=samples)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1])
    rec.record(0, 1, 0.1, logits, y, None, **features(2, 3))
    samples.record(0, 1, torch.tensor([7, 9]))
    steps = rec.drain()
    cols = samples.drain()
    assert steps["correct"].tolist() == [1, 0, 0]  # class 0 right, class 1 wrong, class 2 absent
    assert cols["correct"].tolist() == [True, False]
    p0 = math.exp(2) / (math.exp(2) + 2)  # softmax of (2, 0, 0) at the true class 0
    # a float32 log-softmax of 3 logits, then exp: a few ulps of the largest logit
    assert cols["p_true"][0] == pytest.approx(p0, rel=rel(3))
    assert cols["loss"][1] == pytest.approx(-math.log(1 / (2 + math.exp(3))), rel=rel(3))


def test_sample_recorder_matches_per_sample_math() -> None:
    g = torch.Generator().manual_seed(3)
    samples = SampleRecorder(torch.device("cpu"))
    rec = StepRecorder(4, 3, torch.device("cpu"), classifier(4), samples=samples)
    batches = []
    for step in (5, 6, 7):
        logits = torch.randn(6, 4, generator=g) * 2
        y = torch.randint(0, 4, (6,), generator=g)
        ids = torch.randperm(100, generator=g)[:6]
        rec.record(step, 2, 0.1, logits, y, None, **features(6, 4, g))
        samples.record(step, 2, ids)
        batches.append((logits, y, ids))
    rec.settle()  # the values of all three steps, computed at once, reach the samples
    cols = samples.drain()
    assert len(samples) == 0 and len(cols["step"]) == 18
    i = 0
    for step, (logits, y, ids) in zip((5, 6, 7), batches):
        for j, (z, t, sid) in enumerate(zip(logits.tolist(), y.tolist(), ids.tolist())):
            p = math.exp(z[t]) / sum(math.exp(v) for v in z)
            assert (cols["step"][i], cols["epoch"][i], cols["pos"][i]) == (step, 2, j)
            assert (cols["sample_id"][i], cols["class_id"][i]) == (sid, t)
            assert cols["correct"][i] == (max(range(4), key=lambda k: z[k]) == t)
            # float32 log-softmax of 4 logits of size up to ~6: its round-off is absolute,
            # eps times the logits' size, so relative to p (and absolute for the loss)
            big = max(abs(v) for v in z) + 1
            assert cols["p_true"][i] == pytest.approx(p, rel=rel(4) * big)
            assert cols["loss"][i] == pytest.approx(-math.log(p), rel=0, abs=rel(4) * big)
            i += 1


def test_real_run_sample_rows() -> None:
    # two epochs: the second epoch's presentations must not change the first's rows once written
    sink = MemorySink()
    train(TrainConfig(ratio=100, epochs=2, device="cpu"), sink)
    s, steps = sink.table("samples"), sink.table("steps")
    ds = load_dataset("mnist1d")
    idx = long_tailed_indices(ds.y_train, dataset_counts(ds, 100), 0)
    per_epoch = len(idx) // 128
    n_steps = 2 * per_epoch
    assert len(s["step"]) == n_steps * 128 and set(s["epoch"]) == {1, 2}
    # sample_id indexes the dataset's own training arrays: its label is the recorded class
    assert np.array_equal(ds.y_train[s["sample_id"]], s["class_id"])
    # a plain shuffle presents every long-tailed sample at most once per epoch, the last partial
    # batch's (len % 128) not at all
    for epoch in (1, 2):
        ids = s["sample_id"][s["epoch"] == epoch].tolist()
        assert len(set(ids)) == len(ids) == per_epoch * 128 and set(ids) <= set(idx.tolist())
    assert s["pos"].tolist() == list(range(128)) * n_steps
    # grouped by step and class, the samples give the step rows' sums
    key = s["step"] * 10 + s["class_id"]
    for name, col in (("n", np.ones(len(key))), ("correct", s["correct"].astype(float))):
        got = np.bincount(key, weights=col, minlength=n_steps * 10)
        np.testing.assert_array_equal(got, steps[name], err_msg=name)  # counts: exact
    for name, col in (("loss_sum", s["loss"]), ("p_true_sum", s["p_true"])):
        # the step rows sum the same float32 values in float32 (at most 128 a class and step)
        got = np.bincount(key, weights=col, minlength=n_steps * 10)
        np.testing.assert_allclose(got, steps[name], rtol=rel(128), err_msg=name)


# ==== analyses over hand-made presentation sequences ==============================================

def memo_by_hand(seqs: dict[int, tuple[int, list[tuple[int, bool, float]]]]) -> dict[int, dict]:
    """Per sample: (class, [(epoch, correct, p_true), ...] in presentation order) ->
    first-learned epoch, stable epoch, forgetting events, cartography numbers."""
    out = {}
    for sid, (cls, pres) in seqs.items():
        ok = [c for _, c, _ in pres]
        first = next((e for e, c, _ in pres if c), None)
        last_wrong = max((k for k, c in enumerate(ok) if not c), default=-1)
        stable = pres[last_wrong + 1][0] if last_wrong + 1 < len(pres) else None
        forgets = sum(1 for a, b in zip(ok, ok[1:]) if a and not b)
        p = [v for _, _, v in pres]
        out[sid] = {"cls": cls, "first": first, "stable": stable, "forgets": forgets,
                    "conf": float(np.mean(p)), "var": float(np.std(p)),
                    "corr": sum(ok) / len(ok)}
    return out


def write_store(root: Path, seqs: dict, grp: list[str]) -> Store:
    w = RunWriter(root, "hand")
    w.start({"name": "hand", "config": {}})
    n = len(grp)
    w.write("classes", {"class_id": list(range(n)), "class_name": [str(c) for c in range(n)],
                        "train_count": [10] * n, "test_count": [10] * n, "rank": list(range(n)),
                        "grp": grp, "shot": ["few"] * n})
    rows = [(sid, cls, e, 100 * e + k, ok, p) for sid, (cls, pres) in seqs.items()
            for k, (e, ok, p) in enumerate(pres)]
    w.write("samples", {"sample_id": [r[0] for r in rows], "class_id": [r[1] for r in rows],
                        "epoch": [r[2] for r in rows], "step": [r[3] for r in rows],
                        "correct": [r[4] for r in rows], "p_true": [r[5] for r in rows],
                        "loss": [-math.log(r[5]) for r in rows], "pos": [0] * len(rows)})
    w.finish("finished")
    return Store(root)


def run_query(store: Store, name: str, **params) -> list[dict]:
    q = get_query(name)
    return store.sql(q.sql, q.bind(params)).to_dicts()


def seq(cls: int, oks: str, ps: list[float]) -> tuple[int, list[tuple[int, bool, float]]]:
    return cls, [(e, ch == "T", p) for e, (ch, p) in enumerate(zip(oks, ps), 1)]


HAND = {  # sample -> class, correct at epochs 1..4, p_true at epochs 1..4 (no two samples tie
    #       on mean or spread: SQL and numpy may round a tie apart)
    0: seq(0, "TTTT", [0.6, 0.7, 0.8, 0.9]),
    1: seq(0, "FTFT", [0.2, 0.6, 0.3, 0.7]),
    2: seq(0, "TFTF", [0.5, 0.1, 0.6, 0.25]),
    3: seq(1, "FFFF", [0.1, 0.1, 0.2, 0.1]),
    4: seq(1, "FTTF", [0.3, 0.5, 0.65, 0.4]),
    5: seq(1, "TFFT", [0.7, 0.3, 0.2, 0.8]),
}


def test_forgetting_and_first_learned_of_a_hand_made_sequence(tmp_path: Path) -> None:
    store = write_store(tmp_path, HAND, ["majority", "minority"])
    rows = {(r["grp"], r["class_id"]): r for r in run_query(store, "memorisation")}
    # by hand: class 0 forgets 0 + 1 + 2 times; first learned at 1, 2, 1; stays learned from
    # 1 and 4 (sample 2 ends wrong); class 1 forgets 0 + 1 + 1; learned at 2, 1 (3 never);
    # stays learned only sample 5, from epoch 4
    c0, c1 = rows["majority", 0], rows["minority", 1]
    assert (c0["samples"], c0["forgetting_events"], c0["never_learned"]) == (3, 3, 0)
    assert c0["first_learned_epoch"] == approx64(4 / 3)
    assert c0["stable_epoch"] == approx64(2.5)
    assert c0["forgettable_share"] == approx64(2 / 3)  # samples 1 and 2; 0 is unforgettable
    # sample 3 was never learned: forgettable (Toneva et al.), with the largest count, 4
    assert c1["forgettable_share"] == approx64(1.0)
    assert c1["mean_forgetting_count"] == approx64((4 + 1 + 1) / 3)
    assert (c1["samples"], c1["forgetting_events"], c1["never_learned"]) == (3, 2, 1)
    assert c1["first_learned_epoch"] == approx64(1.5)
    assert c1["stable_epoch"] == approx64(4.0)
    assert rows["minority", None]["events_per_sample"] == approx64(2 / 3)


def toneva_counts(seqs: dict) -> dict[int, int]:
    """Each sample's forgetting count as the reference code computes it (mtoneva/
    example_forgetting, order_examples_by_forgetting.py: `compute_forgetting_statistics`, then
    `sort_examples_by_forgetting` for one run), its logic transcribed onto our sequences."""
    counts = {}
    for sid, (_, pres) in seqs.items():
        presentation_acc = np.array([1 if ok else 0 for _, ok, _ in pres])
        transitions = presentation_acc[1:] - presentation_acc[:-1]
        unlearned = np.where(transitions == -1)[0] + 2 if (transitions == -1).any() else []
        first_learned = (np.where(presentation_acc == 1)[0][0] if (presentation_acc == 1).any()
                         else np.nan)
        # "If example was never learned during current training run, add max forgetting counts"
        counts[sid] = len(pres) if np.isnan(first_learned) else len(unlearned)
    return counts


def test_forgetting_counts_match_the_reference_code(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    seqs = {}
    for sid in range(60):
        n_epochs = int(rng.integers(1, 8))
        oks = "".join("T" if v else "F" for v in rng.random(n_epochs) < 0.5)
        seqs[sid] = seq(int(rng.integers(0, 2)), oks, [0.5] * n_epochs)
    store = write_store(tmp_path, seqs, ["majority", "minority"])
    got = {r["sample_id"]: r for r in store.sql("SELECT * FROM sample_events").to_dicts()}
    want = toneva_counts(seqs)
    assert {s: r["forgetting_count"] for s, r in got.items()} == want
    assert {s for s, r in got.items() if r["unforgettable"]} == {s for s, c in want.items()
                                                                 if c == 0}
    assert any(r["never_learned"] for r in got.values())  # the case the reference treats apart


def check_against_hand(store: Store, seqs: dict, grp: list[str]) -> None:
    want = memo_by_hand(seqs)
    memo = {(r["grp"], r["class_id"]): r for r in run_query(store, "memorisation")}
    carto = {(r["grp"], r["class_id"]): r for r in run_query(store, "cartography")}
    ids = sorted(want)
    conf = np.array([want[s]["conf"] for s in ids])
    var = np.array([want[s]["var"] for s in ids])

    def pct_rank(v: np.ndarray) -> np.ndarray:  # SQL percent_rank: (rank - 1) / (n - 1)
        return np.array([(v < x).sum() for x in v]) / (len(v) - 1)

    cr, vr = dict(zip(ids, pct_rank(conf))), dict(zip(ids, pct_rank(var)))
    for c, g in enumerate(grp):
        mine = [want[s] for s in ids if want[s]["cls"] == c]
        mids = [s for s in ids if want[s]["cls"] == c]
        m, k = memo[g, c], carto[g, c]
        assert m["forgetting_events"] == sum(x["forgets"] for x in mine)
        assert m["never_learned"] == sum(x["first"] is None for x in mine)
        learned = [x["first"] for x in mine if x["first"] is not None]
        assert m["first_learned_epoch"] == (approx64(np.mean(learned)) if learned else None)
        stable = [x["stable"] for x in mine if x["stable"] is not None]
        assert m["stable_epoch"] == (approx64(np.mean(stable)) if stable else None)
        assert k["samples"] == len(mine)
        assert k["confidence"] == pytest.approx(np.mean([x["conf"] for x in mine]))
        assert k["variability"] == pytest.approx(np.mean([x["var"] for x in mine]), abs=1e-12)
        assert k["correctness"] == approx64(np.mean([x["corr"] for x in mine]))
        easy = [cr[s] >= 2 / 3 and vr[s] < 2 / 3 for s in mids]
        hard = [cr[s] < 1 / 3 and vr[s] < 2 / 3 for s in mids]
        assert k["easy_share"] == approx64(np.mean(easy))
        assert k["hard_share"] == approx64(np.mean(hard))
        assert k["ambiguous_share"] == approx64(np.mean([vr[s] >= 2 / 3 for s in mids]))


def test_hand_made_sequences_through_memorisation_and_cartography(tmp_path: Path) -> None:
    check_against_hand(write_store(tmp_path, HAND, ["majority", "minority"]), HAND,
                       ["majority", "minority"])


def test_random_sequences_through_memorisation_and_cartography(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    seqs = {}
    for sid in range(40):
        n_epochs = int(rng.integers(2, 7))
        oks = "".join("T" if v else "F" for v in rng.random(n_epochs) < 0.6)
        seqs[sid * 3 + 1] = seq(int(rng.integers(0, 4)), oks,
                                rng.uniform(0.05, 0.95, n_epochs).tolist())
    grp = ["majority", "majority", "minority", "minority"]
    check_against_hand(write_store(tmp_path, seqs, grp), seqs, grp)


def test_cartography_starts_at_from_epoch(tmp_path: Path) -> None:
    store = write_store(tmp_path, HAND, ["majority", "minority"])
    rows = {(r["grp"], r["class_id"]): r for r in run_query(store, "cartography", from_epoch=3)}
    # epochs 3 and 4 only: class 0's p_true (0.8, 0.9), (0.3, 0.7), (0.6, 0.25)
    assert rows["majority", 0]["confidence"] == approx64(np.mean([0.85, 0.5, 0.425]))
    assert rows["majority", 0]["correctness"] == approx64(np.mean([1.0, 0.5, 0.5]))


def test_sample_recorder_refuses_a_second_batch_size() -> None:
    samples = SampleRecorder(torch.device("cpu"))
    samples.record(0, 1, torch.arange(4))
    with pytest.raises(ValueError, match="a step of 3 samples after steps of 4"):
        samples.record(1, 1, torch.arange(3))
    assert len(samples) == 1  # the refused step left nothing behind
