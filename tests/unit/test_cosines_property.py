"""Every cosine the store holds stays in [-1, 1] or is NULL, whatever vectors it is fed.

Random, near-parallel, identical, anti-parallel and zero vectors, at magnitudes from 1e-20 to 1e20,
go through the functions that produce the stored cosines: `group_cosines` (probes.cos_to_batch,
probes.cos_other; the probe's buffer is float32, so the values are checked after that cast too) and
`geometry_tables` (geometry.cos_mean / cos_max and geometry_summary's feature and classifier-row
cosines, from `pairwise_cosines`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.dynamics import FeatureSums, geometry_tables, group_cosines

KINDS = ("random", "near", "identical", "anti", "zero")


@st.composite
def vectors(draw, k: int, n: int) -> np.ndarray:
    """k vectors of length n, all of one kind, at one magnitude."""
    kind = draw(st.sampled_from(KINDS))
    scale = 10.0 ** draw(st.integers(-20, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = rng.standard_normal(n)
    if kind == "random":
        v = rng.standard_normal((k, n))
    elif kind == "near":  # parallel up to a relative perturbation near float32's eps
        v = base * rng.uniform(0.5, 2.0, (k, 1)) + base * rng.uniform(-1e-7, 1e-7, (k, n))
    elif kind == "identical":
        v = np.tile(base, (k, 1))
    elif kind == "anti":
        v = base * np.where(np.arange(k) % 2, -1.0, 1.0)[:, None]
    else:
        v = np.zeros((k, n))
    return (v * scale).astype(np.float32).astype(np.float64)


def in_bounds(values) -> bool:
    return all(v is None or (isinstance(v, float) and math.isnan(v)) or -1.0 <= v <= 1.0
               for v in values)


@settings(max_examples=300, deadline=None)
@given(g=vectors(2, 257), whole_kind=st.sampled_from(("sum", "first", "own")), data=st.data())
def test_probe_cosines(g: np.ndarray, whole_kind: str, data) -> None:
    g32 = torch.from_numpy(g).float()
    whole = {"sum": g32.sum(0), "first": g32[0].clone(),
             "own": torch.from_numpy(data.draw(vectors(1, 257))[0]).float()}[whole_kind]
    cos_batch, cos_other = group_cosines(g32, whole)
    buf = torch.zeros(2, 2)  # the probe's float32 buffer
    buf[:, 0], buf[:, 1] = cos_batch, cos_other
    for values in (cos_batch.tolist(), cos_other.tolist(), buf.reshape(-1).tolist()):
        assert in_bounds(values), values


def feature_sums(h: np.ndarray, y: np.ndarray, c: int) -> FeatureSums:
    n = np.bincount(y, minlength=c)
    sums = np.zeros((c, h.shape[1]))
    np.add.at(sums, y, h)
    means = sums / np.maximum(n, 1)[:, None]
    r = h - means[y]  # the within-class scatter whole, in the identity basis
    return FeatureSums(n, sums, np.bincount(y, weights=(h * h).sum(1), minlength=c),
                       np.eye(h.shape[1]), r.T @ r)


COSINE_COLUMNS = ("cos_mean", "cos_max", "majority_cos", "minority_cos", "w_cos_mean",
                  "w_majority_cos", "w_minority_cos")


@settings(max_examples=200, deadline=None)
@given(h=vectors(24, 16), w=vectors(6, 16), absent=st.booleans())
def test_geometry_cosines(h: np.ndarray, w: np.ndarray, absent: bool) -> None:
    c = 6
    y = np.arange(24) % c
    if absent:  # a class with no samples: its cosines are NULL, the others still bounded
        y[y == 5] = 0
    minority = np.arange(c) >= 3
    sums = feature_sums(h, y, c)
    per_class, summary = geometry_tables(sums, sums, w, minority, epoch=1, step=0)
    for table in (per_class, summary):
        for col in COSINE_COLUMNS:
            if col in table:
                assert in_bounds(table[col]), (col, table[col])
