"""LRRefineNet: a refiner that works at LR resolution and sees the LR input as well as SR_base."""
import torch
from torch import nn
from torch.nn import functional as F

from cfsrdelta_arch.utils.compat import register_arch

from .bicubic_layers import pixel_unshuffle
from .blocks import residual_conv_body


@register_arch
class LRRefineNet(nn.Module):
    """``out = sr + pixel_shuffle(body(cat(pixel_unshuffle(sr), lr)))``.

    Pixel-unshuffling SR_base by the scale s turns each s x s output block into 3*s*s channels at LR
    resolution, so every conv runs on s*s times fewer pixels than RefineNet's while its receptive
    field covers s times more of the image; the LR input lets it check SR_base against the
    observation. The last conv starts at N(0, init_std), bias 0: identity at initialisation.

    Args:
        upscale (int): scale s of the backbone (2, 3, 4).
        num_in_ch (int): image channels (3).
        width (int): hidden channels.
        num_convs (int): number of 3x3 convs (>= 2); ReLU between them.
        init_std (float): std of the last conv's initial weights.

    ``forward(sr, lr)``: sr (N, 3, s*H, s*W), lr (N, 3, H, W), both RGB in [0, 1]; returns (N, 3, s*H, s*W).
    """

    def __init__(self, upscale=4, num_in_ch=3, width=24, num_convs=3, init_std=1e-4):
        super().__init__()
        self.upscale = upscale
        packed = num_in_ch * upscale * upscale
        self.body = residual_conv_body(packed + num_in_ch, width, packed, num_convs, init_std)

    def forward(self, sr, lr):
        s = self.upscale
        h, w = lr.shape[-2:]
        if sr.shape[-2:] != (h * s, w * s):
            raise ValueError(f'LRRefineNet: SR of size {tuple(sr.shape[-2:])} does not match LR {(h, w)} x{s}')
        delta = self.body(torch.cat([pixel_unshuffle(sr, s), lr], dim=1))
        return sr + F.pixel_shuffle(delta, s)
