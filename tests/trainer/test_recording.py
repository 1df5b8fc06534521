"""The recorders (trainer.recording): one interface for off / minimal / full, a step with no
recording branches, flushes by steps and by seconds, and the loss choosing its classifier."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import threading
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer import loop, recording
from trainer.data import ClassInfo
from trainer.dynamics import evaluate_features
from trainer.losses import DEFAULTS, NORMED_CLASSIFIER, classifier_scale
from trainer.models import NormedLinear, build_model
from trainer.recording import (RECORDERS, Diverged, FullRecorder, NullRecorder, Recorder,
                               StepsRecorder, Subject, make_recorder)
from trainer.sink import MemorySink

C, D, B = 3, 8, 6  # classes, input length, batch
CPU = torch.device("cpu")


def interface(cls: type) -> dict[str, inspect.Signature]:
    """The signatures of the methods the Recorder protocol declares, as `cls` defines them."""
    names = [n for n, v in vars(Recorder).items() if callable(v) and not n.startswith("_")]
    return {n: inspect.signature(getattr(cls, n)) for n in names}


def test_the_three_recorders_have_one_interface() -> None:
    want = interface(Recorder)
    assert set(want) == {"start", "watch", "keeps_graph", "record", "flush_if_due", "flush",
                         "wait", "evaluated"}
    assert set(RECORDERS) == set(loop.DYNAMICS) == {"off", "minimal", "full"}
    for cls in (NullRecorder, StepsRecorder, FullRecorder):
        assert interface(cls) == want, cls.__name__
        public = {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}
        assert public == set(want), cls.__name__  # nothing the loop could call on one only
        assert isinstance(cls.features, bool)


def test_the_step_has_no_branch_on_what_is_recorded() -> None:
    source = textwrap.dedent(inspect.getsource(loop.train_step))
    code = "\n".join(line.split("#")[0] for line in source.splitlines())  # comments aside
    for word in ("dynamics", "full", "minimal", "recording", "probing", "samples"):
        assert not re.search(rf"\b{word}\b", code), word
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.If, ast.IfExp))]


def test_the_step_is_short_and_the_loop_too() -> None:
    step = ast.parse(textwrap.dedent(inspect.getsource(loop.train_step))).body[0]
    assert len(step.body) - 1 <= 15  # statements after the docstring
    assert len(inspect.getsource(loop._train).splitlines()) <= 80


# ==== recorders on a tiny model, without the loop =================================================

def subject(model: torch.nn.Module, **cadence) -> Subject:
    return Subject(model, np.array([False, False, True]), torch.arange(100) + 1000, 10, CPU,
                   **cadence)


def one_step(model: torch.nn.Module, rec: Recorder, step: int, g: torch.Generator) -> None:
    """A training step's calls, as loop.train_step makes them (no optimiser)."""
    x = torch.randn(B, D, generator=g)
    y = torch.arange(B) % C
    rows = torch.arange(B) + B * step
    h, logits = model.forward_features(x)
    rec.watch(logits)
    loss = F.cross_entropy(logits, y)
    loss.backward(retain_graph=rec.keeps_graph(step))
    rec.record(step, 1, 0.1, h, logits, y, rows)
    model.zero_grad(set_to_none=True)


def step_parts(sink: MemorySink) -> list[list[int]]:
    return [sorted(set(p["step"].tolist())) for p in sink.parts.get("steps", [])]


@pytest.mark.parametrize("dynamics", ["off", "minimal", "full"])
def test_flush_by_steps(dynamics: str) -> None:
    g = torch.Generator().manual_seed(0)
    model = build_model("mlp", (D,), C)
    sink = MemorySink()
    rec = make_recorder(dynamics, sink, loop.Hooks(),
                        subject(model, flush_steps=3, flush_seconds=1e9, probe_every=4))
    for step in range(7):
        one_step(model, rec, step, g)
        rec.flush_if_due()
    if dynamics == "off":
        rec.flush(epoch_end=True)
        assert sink.parts == {}  # off writes nothing
        return
    assert step_parts(sink) == [[0, 1, 2], [3, 4, 5]]
    assert "samples" not in sink.parts  # per-sample rows wait for the epoch's end
    rec.flush(epoch_end=True)
    assert step_parts(sink) == [[0, 1, 2], [3, 4, 5], [6]]
    if dynamics == "full":  # settled with the steps, written once at the epoch's end
        samples = sink.table("samples")
        assert len(sink.parts["samples"]) == 1 and len(samples["step"]) == 7 * B
        assert samples["sample_id"].tolist() == list(range(1000, 1000 + 7 * B))
        assert sink.table("probes")["step"].tolist() == [0, 0, 4, 4]


def test_flush_by_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(recording, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    g = torch.Generator().manual_seed(1)
    model = build_model("mlp", (D,), C)
    sink = MemorySink()
    rec = StepsRecorder(sink, loop.Hooks(), subject(model, flush_steps=1000, flush_seconds=10.0))
    for step in range(8):
        one_step(model, rec, step, g)
        now[0] += 4.0  # a step takes 4 s: 10 s have passed after the third step since a flush
        rec.flush_if_due()
    assert step_parts(sink) == [[0, 1, 2], [3, 4, 5]]


def test_a_flush_that_finds_a_bad_loss_keeps_the_rows_up_to_it() -> None:
    g = torch.Generator().manual_seed(2)
    model = build_model("mlp", (D,), C)
    sink = MemorySink()
    rec = FullRecorder(sink, loop.Hooks(), subject(model, flush_steps=1000, probe_every=1000))
    for step in range(4):
        one_step(model, rec, step, g)
        if step == 1:
            with torch.no_grad():
                model.fc.bias.fill_(float("nan"))
    with pytest.raises(Diverged) as exc:
        rec.flush()
    assert exc.value.step == 2 and exc.value.kept == 3
    assert sorted(set(sink.table("steps")["step"].tolist())) == [0, 1, 2]
    assert sorted(set(sink.table("samples")["step"].tolist())) == [0, 1, 2]


def test_start_and_evaluated_write_the_level_s_tables() -> None:
    classes = [ClassInfo(c, f"c{c}", 10 - c, 5, c, "minority" if c == 2 else "majority", "few")
               for c in range(C)]
    written = {}
    for dynamics in RECORDERS:
        model = build_model("mlp", (D,), C)
        sink = MemorySink()
        rec = make_recorder(dynamics, sink, loop.Hooks(), subject(model))
        rec.start(classes)
        x, y = torch.randn(30, D), torch.arange(30) % C
        rows, features = {}, {}
        for split in ("train", "test"):
            rows[split], features[split] = evaluate_features(
                model, x, y, C, features=rec.features)
        rec.evaluated(1, 10, rows, features)
        written[dynamics] = set(sink.parts)
    assert written == {"off": set(), "minimal": {"classes", "epochs"},
                       "full": {"classes", "epochs", "geometry", "geometry_summary"}}


# ==== the run =====================================================================================

def test_off_writes_nothing() -> None:
    sink = MemorySink()
    result = loop.train(loop.TrainConfig(ratio=10, epochs=1, max_steps=3, dynamics="off",
                                         device="cpu"), sink)
    assert result.status == "finished" and result.steps == 3
    assert sink.parts == {} and sink.status == "finished"


# ==== the loss chooses its classifier =============================================================

def test_the_loss_says_which_classifier_it_needs() -> None:
    assert NORMED_CLASSIFIER == {"ldam"}
    assert classifier_scale("ce", {}) is None
    assert classifier_scale("ldam", {}) == DEFAULTS["scale"]
    assert classifier_scale("ldam", {"scale": 16}) == 16.0
    fc = build_model("cnn1d", (40,), C, scale=16.0).fc
    assert isinstance(fc, NormedLinear) and fc.scale == 16.0
    assert type(build_model("cnn1d", (40,), C, scale=None).fc) is torch.nn.Linear
    assert "ldam" not in inspect.getsource(loop)  # no special case in the loop


# ==== the epoch-end flush, overlapped with the evaluation =========================================

class GatedSink(MemorySink):
    """A MemorySink whose writes wait for `gate` and note the thread that made them."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.threads: set[str] = set()

    def write(self, table, columns) -> None:
        self.gate.wait(timeout=60)
        self.threads.add(threading.current_thread().name)
        super().write(table, columns)


def recorded(sink: MemorySink, seed: int, overlap: bool, nan_after: int | None = None
             ) -> FullRecorder:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model("mlp", (D,), C)
    rec = FullRecorder(sink, loop.Hooks(), subject(model, flush_steps=1000, probe_every=2))
    for step in range(5):
        one_step(model, rec, step, g)
        if step == nan_after:
            with torch.no_grad():
                model.fc.bias.fill_(float("nan"))
    rec.flush(epoch_end=True, overlap=overlap)
    return rec


def test_an_overlapped_flush_runs_on_its_own_thread_and_writes_what_a_plain_one_writes() -> None:
    plain = MemorySink()
    recorded(plain, 3, overlap=False)
    sink = GatedSink()
    rec = recorded(sink, 3, overlap=True)  # returns while its writes wait at the gate
    assert sink.parts == {}
    sink.gate.set()
    rec.wait()
    assert sink.threads == {"imbtui-flush"}
    assert sink.parts.keys() == plain.parts.keys() == {"steps", "samples", "probes"}
    for table in plain.parts:
        want, got = plain.table(table), sink.table(table)
        assert got.keys() == want.keys()
        for col in want:
            np.testing.assert_array_equal(got[col], want[col], err_msg=f"{table}.{col}")


def test_an_overlapped_flush_that_diverged_is_raised_before_the_evaluation_is_written() -> None:
    sink = GatedSink()
    sink.gate.set()
    rec = recorded(sink, 4, overlap=True, nan_after=1)
    with pytest.raises(Diverged) as exc:
        rec.evaluated(1, 5, {}, {})
    assert exc.value.step == 2 and exc.value.kept == 3
    assert sorted(set(sink.table("steps")["step"].tolist())) == [0, 1, 2]
    assert "epochs" not in sink.parts  # the evaluation of a diverged epoch is not recorded
    rec.wait()  # raised once: nothing is left to wait for


def test_a_recorder_under_torchrun_or_on_a_gpu_flushes_in_the_callers_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("mlp", (D,), C)
    assert StepsRecorder(MemorySink(), loop.Hooks(), subject(model)).can_overlap
    gpu = Subject(model, np.array([False, False, True]), torch.arange(100), 10,
                  torch.device("cuda"))
    monkeypatch.setattr(recording.distributed, "active", lambda: True)
    assert not StepsRecorder(MemorySink(), loop.Hooks(), subject(model)).can_overlap
    monkeypatch.setattr(recording.distributed, "active", lambda: False)
    monkeypatch.setattr(recording, "StepRecorder", lambda *a, **k: None)  # no CUDA buffer here
    assert not StepsRecorder(MemorySink(), loop.Hooks(), gpu).can_overlap
