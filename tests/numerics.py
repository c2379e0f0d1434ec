"""Comparing float results that differ only in summation order, and proving samples distinct.

The same per-sample math computed in another batch size (a whole batch vs chunks of it) or on
another number of threads runs through batched kernels (convolution / matmul blocking, reductions
split across threads) that may add the same terms in another order. Each float32 sum then moves
by a few ulps of its terms (eps_f32 ≈ 1.2e-7). Measured on the tiny test models with 1 and 2
threads: ~1e-6 of the tensor's scale through the U-Net, ~4e-6 through its backward, ~1e-5 after
three guided sampling steps. A tolerance of 1e-4 of the scale (:data:`SUMMATION_RTOL`) leaves a
margin of 10x and more for any thread count, and is still orders of magnitude below the
difference between two samples, so a swapped or mixed-up sample can never pass
(:func:`assert_same_up_to_summation_order` checks that too).
"""

from __future__ import annotations

import torch
from torch import Tensor

SUMMATION_RTOL = 1e-4


def assert_same_up_to_summation_order(
    got: Tensor, want: Tensor, what: str, distinct: bool = True
) -> None:
    """``got`` equals ``want`` up to float summation order: rtol and atol of
    :data:`SUMMATION_RTOL` times the scale (max |want|). With ``distinct`` (batched tensors,
    samples along dim 0), every sample of ``got`` is also more than 100 tolerances away from
    every *other* sample of ``want``: the tolerance could not hide a wrong pairing."""
    scale = float(want.abs().max())
    atol = SUMMATION_RTOL * scale
    close = torch.allclose(got, want, rtol=SUMMATION_RTOL, atol=atol)
    diff = float((got - want).abs().max())
    assert close, f"{what}: max |diff| {diff:.3g} over the tolerance (scale {scale:.3g})"
    for i in range(len(want) if distinct else 0):
        for j in range(len(want)):
            apart = float((got[i] - want[j]).abs().max())
            if i != j:
                assert apart > 100 * atol, f"{what}: samples {i} and {j} only {apart:.3g} apart"


# uint8 images (x + 1) · 127.5 rounded: a float change within the tolerance above (|Δx| ≤
# 2·SUMMATION_RTOL for x in [-1, 1]) moves a pixel by at most 0.0255 levels, so it can only flip
# a rounding, by one level, for pixels that close to a .5 boundary: at most ~5 % of them.
UINT8_FLIP_FRACTION = 2 * 127.5 * 2 * SUMMATION_RTOL


def assert_same_uint8_images_up_to_summation_order(got: Tensor, want: Tensor, what: str) -> None:
    """uint8 images (N, ...) equal up to float summation order before the rounding: no pixel
    off by more than one level, at most :data:`UINT8_FLIP_FRACTION` of them off at all; and
    every image far from every other one (most pixels differ), so a wrong pairing fails."""
    diff = (got.int() - want.int()).abs()
    flipped = float((diff > 0).float().mean())
    assert int(diff.max()) <= 1, f"{what}: a pixel differs by {int(diff.max())} levels"
    assert flipped <= UINT8_FLIP_FRACTION, f"{what}: {flipped:.1%} of the pixels differ"
    for i in range(len(want)):
        for j in range(len(want)):
            if i != j:
                apart = float((got[i] != want[j]).float().mean())
                assert apart > 0.5, f"{what}: images {i} and {j} differ in only {apart:.1%}"
