"""BPRefineNet: back-projection onto the known bicubic degradation, plus a learned LR-resolution correction."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from .blocks import residual_conv_body

from cfsrdelta_arch.utils.bicubic_conv import BicubicDown, BicubicUp


@ARCH_REGISTRY.register()
class BPRefineNet(nn.Module):
    """``out = sr + g * U(lr - D(sr)) + pixel_shuffle(body(cat(unshuffle(sr), lr, lr - D(sr))))``.

    Benchmark LR images are exactly MATLAB-bicubic downsamplings of the HR images (protocol.md), so
    a good SR image should downsample back to its LR input. ``D`` (antialiased bicubic down) and
    ``U`` (bicubic up) are fixed convolutions with MATLAB's kernel (utils/bicubic_conv.py); the
    back-projection term ``U(lr - D(sr))`` pushes SR_base towards consistency with the LR input
    (one step of iterative back-projection), with a learned per-channel gain ``g``. The learned body
    runs at LR resolution on the pixel-unshuffled SR, the LR and the consistency residual, and
    starts at zero output (last conv N(0, init_std), bias 0).

    At initialisation the module is therefore one exact back-projection step when
    ``bp_gain_init`` = 1 (the default), and the identity when it is 0.

    Args:
        upscale (int): scale s (2, 3, 4).
        num_in_ch (int): image channels (3).
        width (int): hidden channels of the learned body.
        num_convs (int): 3x3 convs in the body (>= 2), ReLU between them.
        init_std (float): std of the body's last conv at init.
        bp_gain_init (float): initial back-projection gain g.

    ``forward(sr, lr)``: sr (N, 3, s*H, s*W), lr (N, 3, H, W), RGB in [0, 1]; returns (N, 3, s*H, s*W).
    H and W must be at least 7 (the symmetric padding of the fixed kernels).
    """

    def __init__(self, upscale=4, num_in_ch=3, width=24, num_convs=3, init_std=1e-4, bp_gain_init=1.0):
        super().__init__()
        self.upscale = upscale
        self.down = BicubicDown(upscale, num_in_ch)
        self.up = BicubicUp(upscale, num_in_ch)
        self.bp_gain = nn.Parameter(torch.full((1, num_in_ch, 1, 1), float(bp_gain_init)))
        packed = num_in_ch * upscale * upscale
        self.body = residual_conv_body(packed + 2 * num_in_ch, width, packed, num_convs, init_std)

    def forward(self, sr, lr):
        s = self.upscale
        if sr.shape[-2:] != (lr.shape[-2] * s, lr.shape[-1] * s):
            raise ValueError(f'BPRefineNet: SR of size {tuple(sr.shape[-2:])} does not match LR '
                             f'{tuple(lr.shape[-2:])} x{s}')
        residual = lr - self.down(sr)
        delta = self.body(torch.cat([F.pixel_unshuffle(sr, s), lr, residual], dim=1))
        return sr + self.bp_gain * self.up(residual) + F.pixel_shuffle(delta, s)
