"""BPRefineNet: a learned LR-resolution correction, then back-projection onto the known bicubic degradation."""
import torch
from torch import nn
from torch.nn import functional as F

from cfsrdelta_arch.utils.compat import register_arch

from .back_projection import BackProjection
from .bicubic_layers import pixel_unshuffle
from .blocks import residual_conv_body


@register_arch
class BPRefineNet(nn.Module):
    """``out = P(sr + pixel_shuffle(body(cat(unshuffle(sr), lr, r(sr)))), lr)``.

    Benchmark LR images are MATLAB-bicubic downsamplings of the HR images (README, "Data"), so a good
    SR image should downsample back to its LR input. ``r(x)`` is the saturation-aware LR consistency
    residual of x and ``P`` iterates ``x <- x + U(r(x))`` ``bp_steps`` times (D, U: MATLAB bicubic
    down / up as fixed convolutions; archs/back_projection.py). The learned body runs at LR
    resolution on the pixel-unshuffled SR, the LR and ``r(sr)``, and starts at zero output (last conv
    N(0, init_std), bias 0); the projection after it keeps whatever it adds consistent with the LR.

    At initialisation the module is therefore ``bp_steps`` of back-projection (the identity when
    ``bp_steps`` = 0), which already beats the backbone alone on the held-out val split at x2-x4.

    Args:
        upscale (int): scale s (2, 3, 4).
        num_in_ch (int): image channels (3).
        width (int): hidden channels of the learned body.
        num_convs (int): 3x3 convs in the body (>= 2), ReLU between them.
        init_std (float): std of the body's last conv at init.
        bp_steps (int): back-projection iterations after the body.

    ``forward(sr, lr)``: sr (N, 3, s*H, s*W), lr (N, 3, H, W), RGB in [0, 1]; returns (N, 3, s*H, s*W).
    H and W must be at least 7 (the symmetric padding of the fixed kernels).
    """

    def __init__(self, upscale=4, num_in_ch=3, width=20, num_convs=3, init_std=1e-4, bp_steps=3):
        super().__init__()
        self.upscale = upscale
        self.project = BackProjection(upscale, num_in_ch, bp_steps)
        packed = num_in_ch * upscale * upscale
        self.body = residual_conv_body(packed + 2 * num_in_ch, width, packed, num_convs, init_std)

    def forward(self, sr, lr):
        s = self.upscale
        if sr.shape[-2:] != (lr.shape[-2] * s, lr.shape[-1] * s):
            raise ValueError(f'BPRefineNet: SR of size {tuple(sr.shape[-2:])} does not match LR '
                             f'{tuple(lr.shape[-2:])} x{s}')
        delta = self.body(torch.cat([pixel_unshuffle(sr, s), lr, self.project.residual(sr, lr)], dim=1))
        return self.project(sr + F.pixel_shuffle(delta, s), lr)
