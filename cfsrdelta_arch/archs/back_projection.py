"""Saturation-aware iterative back-projection onto the protocol's bicubic degradation.

Benchmark LR images are ``clip(round(255 * D(HR)), 0, 255) / 255`` with D the MATLAB bicubic
downsampling (the benchmark protocol, README "Data"). So the HR image is consistent with its LR input: ``D(HR) = LR`` up to
rounding, except where the LR is saturated: an LR pixel at 255 only says ``D(HR) >= 254.5/255``
(bicubic overshoot next to hard edges was clipped away), one at 0 that ``D(HR) <= 0.5/255``.
Pushing D(SR) onto a saturated LR value would undo correct overshoot and ring on screen content
(white backgrounds, text), so there the residual is one-sided.
"""
import copy

import torch
from torch import nn
from torch.nn import functional as F

from .bicubic_layers import BicubicDown, BicubicUp, symmetric_pad


def consistency_residual(lr, lr_of_sr):
    """What ``lr_of_sr`` = D(SR) lacks to be consistent with ``lr``, honouring saturation.

    Args:
        lr (Tensor): (N, C, H, W) LR input in [0, 1].
        lr_of_sr (Tensor): (N, C, H, W) D(SR), any range.

    Returns:
        Tensor: (N, C, H, W) ``lr - lr_of_sr``, but only its positive part where ``lr`` is 1 (clipped
        from above) and only its negative part where ``lr`` is 0 (clipped from below).
    """
    residual = lr - lr_of_sr
    residual = torch.where(lr >= 1, residual.clamp(min=0), residual)
    return torch.where(lr <= 0, residual.clamp(max=0), residual)


def down_up_kernel(down, up, canvas=31):
    """The LR -> LR filter of ``down(up(r))`` (D after U), (K, K) float32, odd K.

    D and U are linear, shift-invariant by one LR pixel, and their MATLAB sampling grids are mirror
    images of themselves at the image border, so ``D(U(r))`` is this filter applied to ``r`` after
    symmetric padding (tests/test_back_projection.py checks it against the two passes). Taken as
    the response to a unit impulse, computed in float64 and trimmed to its non-zero support.
    """
    impulse = torch.zeros(1, down.channels, canvas, canvas, dtype=torch.float64)
    impulse[..., canvas // 2, canvas // 2] = 1
    with torch.no_grad():
        response = copy.deepcopy(down).double()(copy.deepcopy(up).double()(impulse))[0, 0]
    support = response.abs().amax(0).nonzero().flatten()
    radius = int(max(canvas // 2 - support.min(), support.max() - canvas // 2))
    if radius >= canvas // 2 - 1:
        raise ValueError('down_up_kernel: the canvas is too small for the filter')
    centre = slice(canvas // 2 - radius, canvas // 2 + radius + 1)
    return response[centre, centre].float()


class BackProjection(nn.Module):
    """``steps`` iterations of ``x <- x + U(consistency_residual(lr, D(x)))``, no learned weights.

    D / U are MATLAB bicubic down / up by ``scale`` as fixed convolutions (bicubic_layers.py). Three
    steps reach the fixed point on val291 to 1e-4 dB (docs/experiments.md). With
    ``saturation_aware=False`` the residual is the plain ``lr - D(x)`` (classic iterative
    back-projection; kept for the ablation in scripts/bench_back_projection.py).

    Computed at LR resolution: D is linear, so ``D(x + U(r)) = D(x) + DU(r)`` with DU a small LR
    filter (:func:`down_up_kernel`), and U is linear, so the steps' updates add up to one
    ``U(r_1 + ... + r_steps)``. One full-resolution D and one U instead of ``steps`` of each; equal
    to the step-by-step form up to float rounding (tests/test_back_projection.py).

    ``forward(sr, lr)``: sr (N, C, s*H, s*W), lr (N, C, H, W) in [0, 1]; returns sr's shape.
    H and W must be at least 7 (the symmetric padding of the fixed kernels).
    """

    def __init__(self, scale, channels=3, steps=3, saturation_aware=True):
        super().__init__()
        if steps < 0:
            raise ValueError(f'BackProjection: steps must be >= 0, got {steps}')
        self.steps, self.saturation_aware, self.channels, self.scale = steps, saturation_aware, channels, scale
        self.down = BicubicDown(scale, channels)
        self.up = BicubicUp(scale, channels)
        kernel = down_up_kernel(self.down, self.up)
        self.register_buffer('down_up_kernel', kernel.expand(channels, 1, *kernel.shape).contiguous(),
                             persistent=False)

    def residual_of(self, lr, lr_of_sr):
        """:func:`consistency_residual` (or the plain ``lr - lr_of_sr`` without saturation awareness)."""
        return consistency_residual(lr, lr_of_sr) if self.saturation_aware else lr - lr_of_sr

    def residual(self, sr, lr):
        """(N, C, H, W) LR-resolution consistency residual of ``sr`` (see consistency_residual)."""
        return self.residual_of(lr, self.down(sr))

    def down_up(self, r):
        """``D(U(r))`` for an LR tensor (N, C, H, W), as one LR filter."""
        pad = self.down_up_kernel.shape[-1] // 2
        return F.conv2d(symmetric_pad(r, pad, pad, pad, pad), self.down_up_kernel, groups=self.channels)

    def forward(self, sr, lr):
        if not self.steps:
            return sr
        lr_of_x = self.down(sr)
        total = None
        for step in range(self.steps):
            r = self.residual_of(lr, lr_of_x)
            total = r if total is None else total + r
            if step + 1 < self.steps:
                lr_of_x = lr_of_x + self.down_up(r)
        return sr + self.up(total)

    def conv_macs(self, out):
        """MACs per sample of the LR filters of the forward that produced ``out`` (D and U count in their
        own modules; utils/flops.py convention)."""
        c, h, w = out.shape[1:]
        return max(self.steps - 1, 0) * c * (h // self.scale) * (w // self.scale) * self.down_up_kernel[0].numel()
