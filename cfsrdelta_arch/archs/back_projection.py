"""Saturation-aware iterative back-projection onto the protocol's bicubic degradation.

Benchmark LR images are ``clip(round(255 * D(HR)), 0, 255) / 255`` with D the MATLAB bicubic
downsampling (the benchmark protocol, README "Data"). So the HR image is consistent with its LR input: ``D(HR) = LR`` up to
rounding, except where the LR is saturated: an LR pixel at 255 only says ``D(HR) >= 254.5/255``
(bicubic overshoot next to hard edges was clipped away), one at 0 that ``D(HR) <= 0.5/255``.
Pushing D(SR) onto a saturated LR value would undo correct overshoot and ring on screen content
(white backgrounds, text), so there the residual is one-sided.
"""
import torch
from torch import nn

from .bicubic_layers import BicubicDown, BicubicUp


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


class BackProjection(nn.Module):
    """``steps`` iterations of ``x <- x + U(consistency_residual(lr, D(x)))``, no learned weights.

    D / U are MATLAB bicubic down / up by ``scale`` as fixed convolutions (bicubic_layers.py). Three
    steps reach the fixed point on val291 to 1e-4 dB (docs/experiments.md). With
    ``saturation_aware=False`` the residual is the plain ``lr - D(x)`` (classic iterative
    back-projection; kept for the ablation in scripts/bench_back_projection.py).

    ``forward(sr, lr)``: sr (N, C, s*H, s*W), lr (N, C, H, W) in [0, 1]; returns sr's shape.
    H and W must be at least 7 (the symmetric padding of the fixed kernels).
    """

    def __init__(self, scale, channels=3, steps=3, saturation_aware=True):
        super().__init__()
        if steps < 0:
            raise ValueError(f'BackProjection: steps must be >= 0, got {steps}')
        self.steps, self.saturation_aware = steps, saturation_aware
        self.down = BicubicDown(scale, channels)
        self.up = BicubicUp(scale, channels)

    def residual(self, sr, lr):
        """(N, C, H, W) LR-resolution consistency residual of ``sr`` (see consistency_residual)."""
        lr_of_sr = self.down(sr)
        return consistency_residual(lr, lr_of_sr) if self.saturation_aware else lr - lr_of_sr

    def forward(self, sr, lr):
        for _ in range(self.steps):
            sr = sr + self.up(self.residual(sr, lr))
        return sr
