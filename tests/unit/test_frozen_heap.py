"""trainer.loop.frozen_heap: while a run trains, the objects that existed before it are out of the
cyclic garbage collector's passes (its permanent generation, CPython's own count), the run's own
cyclic garbage is still collected, and afterwards the heap is as the caller left it."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from trainer.loop import Hooks, TrainConfig, train


class Cycle:
    def __init__(self) -> None:
        self.me = self


class Watch(Hooks):
    def __init__(self) -> None:
        self.frozen: list[int] = []
        self.collected: list[bool] = []

    def on_epoch(self, epoch: int, summary: dict[str, Any]) -> None:
        self.frozen.append(gc.get_freeze_count())
        garbage = Cycle()
        ref = weakref.ref(garbage)
        del garbage
        gc.collect()
        self.collected.append(ref() is None)


def tiny_run(hooks: Hooks) -> None:
    result = train(TrainConfig(ratio=100, max_steps=2, dynamics="off", device="cpu"), hooks=hooks)
    assert result.status == "finished"


@pytest.fixture
def unfrozen():
    if gc.get_freeze_count():
        pytest.skip("something in this process froze the heap before the test")
    yield
    gc.unfreeze()


def test_a_run_freezes_what_existed_and_still_collects_its_own_garbage(unfrozen) -> None:
    before = len(gc.get_objects())
    watch = Watch()
    tiny_run(watch)
    # what existed before the run, less what it has freed since (temporaries): nearly all of it
    assert watch.frozen and all(n >= 0.9 * before for n in watch.frozen), (watch.frozen, before)
    assert all(watch.collected)
    assert gc.get_freeze_count() == 0


def test_a_heap_the_caller_froze_stays_frozen(unfrozen) -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    tiny_run(Hooks())
    # still frozen: all of it, less what was freed meanwhile (an unfreeze would leave 0)
    assert gc.get_freeze_count() >= 0.9 * frozen
