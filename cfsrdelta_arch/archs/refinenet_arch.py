"""RefineNet: the prior art's tiny residual post-processor, run at output (SR) resolution."""
from torch import nn

from cfsrdelta_arch.utils.compat import register_arch

from .blocks import residual_conv_body


@register_arch
class RefineNet(nn.Module):
    """``out = sr + body(sr)`` with body = Conv3x3(3->w), ReLU, Conv3x3(w->w), ReLU, Conv3x3(w->3).

    The last conv starts at weight N(0, init_std), bias 0, so the module is (almost exactly) the
    identity at initialisation. With the default width 32 it has 11,011 parameters and costs about
    11K multiply-adds per output pixel.

    Args:
        num_in_ch (int): image channels (3).
        width (int): hidden channels (32).
        init_std (float): std of the last conv's initial weights (1e-4).

    ``forward(sr, lr=None)``: sr (N, 3, H, W) in [0, 1]; ``lr`` is accepted for the common refiner
    interface and ignored. Returns (N, 3, H, W).
    """

    def __init__(self, num_in_ch=3, width=32, init_std=1e-4):
        super().__init__()
        self.body = residual_conv_body(num_in_ch, width, num_in_ch, 3, init_std)

    def forward(self, sr, lr=None):
        return sr + self.body(sr)
