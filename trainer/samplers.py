"""Which training samples each epoch presents: a permutation, or a class-rebalanced draw.

`none` is a plain shuffle (each sample once per epoch). The re-sampling schemes draw an epoch of the
same length with replacement, class c with probability p_c and a uniform sample within the class:
  class-balanced:  p_c = 1 / C                       (Kang et al. 2020, "class-balanced sampling")
  square-root:     p_c = sqrt(n_c) / sum_k sqrt(n_k) (Mahajan et al. 2018; Kang et al. 2020)
The draw is an inverse-CDF lookup of device-side uniforms (`searchsorted`), so it never waits for
the device, and it uses the run's generator, so a seed gives the same epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from trainer.data import DataError

from trainer.options import SAMPLERS  # noqa: E402  (the one list of names)


def class_probabilities(counts: Sequence[int], name: str) -> np.ndarray:
    """Probability that a draw comes from class c."""
    n = np.asarray(counts, dtype=np.float64)
    if name == "none":
        q = n
    elif name == "class-balanced":
        q = np.ones_like(n)
    elif name == "square-root":
        q = np.sqrt(n)
    else:
        raise DataError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return q / q.sum()


class Sampler:
    """Per-epoch index tensors over a training set whose labels `y` live on the device."""

    def __init__(self, name: str, y: torch.Tensor, counts: Sequence[int],
                 gen: torch.Generator) -> None:
        self.name, self.gen, self.n = name, gen, len(y)
        p = class_probabilities(counts, name)
        if name != "none":
            # each sample of class c carries p_c / n_c; the cumulative sum is the lookup table
            per_class = torch.as_tensor(p / np.asarray(counts, dtype=np.float64),
                                        dtype=torch.float64, device=y.device)
            cdf = per_class[y].cumsum(0)
            self.cdf = cdf / cdf[-1]

    def epoch(self) -> torch.Tensor:
        if self.name == "none":
            return torch.randperm(self.n, device=self.gen.device, generator=self.gen)
        u = torch.rand(self.n, device=self.gen.device, generator=self.gen, dtype=torch.float64)
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.n - 1)
