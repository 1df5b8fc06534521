"""Float tolerances that follow from the dtype and the size of the computation.

A sum of n terms in floating point, each term computed to within k units of round-off, is within
about (n + k) * eps of the exact sum, measured against the sum of the terms' magnitudes (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., section 4.2: recursive summation errs by
at most (n - 1) * u * sum|x_i| + O(u^2) with u = eps / 2; pairwise and SIMD-lane summation do
better). That bound holds in any summation order, so a tolerance built from it holds under every
CPU kernel set (AVX-512, AVX2, or PyTorch's `ATEN_CPU_CAPABILITY=default`) and on the GPU, where a
tolerance picked by habit (1e-6) holds only on the machine it was tried on.

- `rel(n)`: relative tolerance of a result built from n same-sign terms (a sum of positives, a
  norm, a mean), where the sum of magnitudes is the result itself.
- `approx_sum(terms)`: a sum whose terms may cancel (margins, logits): the tolerance is taken
  against the sum of magnitudes, not the (possibly tiny) result.
- `cos_tol(n)`: absolute tolerance of a cosine of two n-vectors (|cos| <= 1, so the bound on the
  dot product relative to |a| |b| is the bound on the cosine).

Exact equality is used in the tests only where the computation is exact: integer counts, values
copied unchanged, and results of one code path compared with themselves.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pytest

EPS = {"float32": float(np.finfo(np.float32).eps),   # 1.19e-07
       "float64": float(np.finfo(np.float64).eps)}   # 2.22e-16


def rel(n: int, dtype: str = "float32", k: int = 8) -> float:
    """Relative tolerance of a float `dtype` result accumulated from `n` same-sign terms, each
    computed to within `k` ulps (a log-softmax or an exp is a few ulps; 8 leaves room)."""
    return (n + k) * EPS[dtype]


def forward_rel(model) -> float:
    """Relative tolerance of a float32 forward pass's outputs (features, logits) computed twice,
    e.g. in other batch sizes, which pick other kernels: each layer adds the round-off of a dot
    product over its fan-in, so the bound is rel(sum of the layers' fan-ins)."""
    fan_in = sum(int(np.prod(p.shape[1:])) for p in model.parameters() if p.dim() > 1)
    return rel(fan_in)


def cos_tol(n: int, dtype: str = "float32", k: int = 8) -> float:
    """Absolute tolerance of a cosine between two n-vectors whose entries carry `dtype` round-off."""
    return 2 * (n + k) * EPS[dtype]


def sum_tol(terms: Iterable[float], dtype: str = "float32", k: int = 8) -> float:
    """Absolute tolerance of the sum of `terms` computed in `dtype`."""
    mags = np.abs(np.asarray(list(terms), dtype=np.float64))
    return (len(mags) + k) * EPS[dtype] * float(mags.sum())


def approx_sum(terms: Iterable[float], dtype: str = "float32", k: int = 8):
    """pytest.approx of the exact (float64) sum of `terms`, to the tolerance of summing them in
    `dtype`."""
    terms = [float(t) for t in terms]
    return pytest.approx(float(np.sum(terms, dtype=np.float64)),
                         abs=sum_tol(terms, dtype, k), rel=0)


def approx64(expected, n: int = 64):
    """pytest.approx for a float64 result of at most `n` operations on small hand-made inputs (SQL
    aggregates over a test store, a mean of a few values): rel (n + 8) * eps64 ~ 1.6e-14."""
    return pytest.approx(expected, rel=rel(n, "float64"), abs=rel(n, "float64"))
