"""LESRCNN: lightweight SR with an enhanced CNN (Tian et al., Knowledge-Based Systems 2020; official
code github.com/hellloxiaotian/LESRCNN).

Three parts: IEEB (17 layers alternating 3x3+ReLU and 1x1 convs, with a running sum of the 1x1
outputs), RB (one upsampler shared by the deep and the first-layer features) and IRB (four 3x3+ReLU
convs and a 3x3 conv to RGB). Parameter names follow the official release, so its plain state
dicts load strictly (x2 626,328, x3 810,968, x4 774,040 parameters, mean shifters included).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from cfsrdelta_arch.archs.cfsr_arch import RGB_MEAN
from cfsrdelta_arch.utils.compat import register_arch
from cfsrdelta_arch.utils.weights import check_state_dict

SCALES = (2, 3, 4)


class MeanShift(nn.Module):
    """Add ``sign * rgb_mean`` per channel, as a frozen 1x1 conv (identity weight) named ``shifter``.

    (N, 3, H, W) -> (N, 3, H, W); the weights are stored in the checkpoints but never trained.
    """

    def __init__(self, rgb_mean, sign):
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(sign * torch.tensor(rgb_mean, dtype=torch.float32))
        self.shifter.requires_grad_(False)

    def forward(self, x):
        return self.shifter(x)


class Upsampler(nn.Module):
    """``up.body`` = log2(s) x [3x3 conv F->4F, PixelShuffle(2)] for s = 2, 4; [3x3 conv F->9F,
    PixelShuffle(3)] for s = 3. (N, F, H, W) -> (N, F, s*H, s*W).
    """

    def __init__(self, num_feat, scale):
        super().__init__()
        factors = [3] if scale == 3 else [2] * int(math.log2(scale))
        layers = []
        for f in factors:
            layers += [nn.Conv2d(num_feat, num_feat * f * f, 3, padding=1), nn.PixelShuffle(f)]
        self.up = nn.Module()
        self.up.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.up.body(x)


def conv_block(cin, cout, kernel_size, relu):
    """``Sequential(conv[, ReLU])`` without bias, 'same' padding (the release's ``convK`` layout)."""
    layers = [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def checkpoint_scale(state_dict):
    """Upscale factor of a LESRCNN state dict, from its upsampler convs; None if it has none.

    One conv F->9F means x3; otherwise each F->4F conv doubles the size.
    """
    convs = sorted(k for k in state_dict if k.startswith('upsample.up.body.') and k.endswith('.weight'))
    if not convs:
        return None
    first = state_dict[convs[0]].shape
    if first[0] == 9 * first[1]:
        return 3
    return 2 ** len(convs)


@register_arch
class LESRCNN(nn.Module):
    """LESRCNN super-resolution network (single scale).

    Args:
        upscale (int): 2, 3 or 4.
        num_feat (int): feature width F (64 in the release).
        rgb_mean (tuple[float]): per-channel mean removed at the input and added back at the output.

    Input (N, 3, H, W) RGB in [0, 1]; output (N, 3, H*upscale, W*upscale), same range (unclamped).
    """

    def __init__(self, upscale=4, num_feat=64, rgb_mean=RGB_MEAN):
        super().__init__()
        if upscale not in SCALES:
            raise ValueError(f'LESRCNN: upscale must be 2, 3 or 4, got {upscale}')
        self.upscale = upscale
        self.sub_mean = MeanShift(rgb_mean, -1)
        self.add_mean = MeanShift(rgb_mean, +1)
        f = num_feat
        self.conv1 = conv_block(3, f, 3, relu=False)
        # conv2 ... conv17: even index 3x3 + ReLU, odd index 1x1.
        for k in range(2, 18):
            setattr(self, f'conv{k}', conv_block(f, f, 3, relu=True) if k % 2 == 0 else conv_block(f, f, 1, relu=False))
        for i in range(1, 5):
            setattr(self, f'conv17_{i}', conv_block(f, f, 3, relu=True))
        self.conv18 = conv_block(f, 3, 3, relu=False)
        self.upsample = Upsampler(f, upscale)

    def forward(self, x):
        """(N, 3, H, W) in [0, 1] -> (N, 3, s*H, s*W).

        The released weights were trained with in-place ReLUs that also rectify the running sum
        and the first-layer features it starts from, so the effective IEEB recurrence is
        ``h = relu(h + conv_odd(conv_even(h)))`` from ``h = relu(conv1(x))``. Read literally (sum of
        unrectified values, starting from ``conv1(x)``), the spec's pseudo-code gives 26.32 dB
        instead of 31.93 dB on Set5 x4 with the official weights.
        """
        first = F.relu(self.conv1(self.sub_mean(x)))
        # IEEB: eight (3x3 + ReLU, 1x1) pairs, each added to the rectified running sum.
        h = first
        for k in range(2, 18, 2):
            h = F.relu(h + getattr(self, f'conv{k + 1}')(getattr(self, f'conv{k}')(h)))
        # RB: the same upsampler for the deep and the first-layer features.
        t = F.relu(self.upsample(h) + self.upsample(first))
        # IRB.
        t = self.conv17_4(self.conv17_3(self.conv17_2(self.conv17_1(t))))
        return self.add_mean(self.conv18(t))

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """``nn.Module.load_state_dict`` that first names a wrong network or scale in one line."""
        check_state_dict(self, state_dict, arch_name='LESRCNN', state_scale=checkpoint_scale, scale=self.upscale)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
