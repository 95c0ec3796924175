"""MATLAB-compatible bicubic resizing by an integer factor, as fixed convolutions.

Same kernel, antialiasing and symmetric border handling as ``basicsr.utils.matlab_functions.imresize``,
but batched, differentiable and ONNX-exportable, so networks can use the evaluation protocol's
degradation model inside their forward pass. The tap weights are computed here, operation for
operation as BasicSR's ``calculate_weights_indices`` does (tests/test_back_projection.py checks
they are equal), so the networks need no BasicSR (spandrel support).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F


def _cubic(x):
    """MATLAB's cubic convolution kernel (a = -0.5), elementwise."""
    absx = torch.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1).type_as(absx) + \
        (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) * (absx <= 2)).type_as(absx)


def _interior_taps(in_length, out_length, scale):
    """1-D weights and first-tap offsets of MATLAB's cubic resize (antialiased when ``scale`` < 1).

    Returns (weights (out_length, taps) float64 tensor, first (out_length,) int tensor) where
    ``first[i]`` is the 0-based input index of output i's first tap before symmetric padding.
    Computed in float32 like MATLAB's port in BasicSR, so the kernels are bit-identical to it.
    """
    kernel_width = 4 / scale if scale < 1 else 4
    x = torch.linspace(1, out_length, out_length)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2  # one spare tap each side, dropped below when it is zero
    indices = left.view(out_length, 1) + torch.linspace(0, p - 1, p).view(1, p)
    distance = u.view(out_length, 1) - indices
    weights = scale * _cubic(distance * scale) if scale < 1 else _cubic(distance)
    weights = weights / torch.sum(weights, 1).view(out_length, 1)
    zeros = torch.sum(weights == 0, 0)  # as MATLAB: a first/last tap column with zeros is dropped
    if zeros[0] != 0:
        indices, weights = indices[:, 1:p - 1], weights[:, 1:p - 1]
    if zeros[-1] != 0:
        indices, weights = indices[:, :p - 2], weights[:, :p - 2]
    return weights.double(), indices[:, 0].long() - 1


def pixel_unshuffle(x, scale):
    """``F.pixel_unshuffle`` (N, C, s*H, s*W) -> (N, C*s*s, H, W); while exporting to ONNX, the same
    as a stride-s depthwise conv with one-hot s x s kernels (exact): the exporter's 6-D Transpose of
    a full-resolution image is slow in onnxruntime (BPRefineNet x4 at 1280x720: 251 -> 186 ms, 2
    threads), while eager PyTorch is fastest with the reshape."""
    if not torch.onnx.is_in_onnx_export():
        return F.pixel_unshuffle(x, scale)
    channels = int(x.shape[1])  # fixed by the network; a constant in the graph
    one_hot = torch.eye(scale * scale, dtype=x.dtype, device=x.device).view(scale * scale, 1, scale, scale)
    return F.conv2d(x, one_hot.repeat(channels, 1, 1, 1), stride=scale, groups=channels)


def symmetric_pad(x, top, bottom, left, right):
    """MATLAB 'symmetric' padding (edge pixel repeated: ... x1 x0 | x0 x1 ...) of an NCHW tensor."""
    if top or bottom:
        x = torch.cat([x[..., :top, :].flip(-2), x, x[..., x.shape[-2] - bottom:, :].flip(-2)], dim=-2)
    if left or right:
        x = torch.cat([x[..., :left].flip(-1), x, x[..., x.shape[-1] - right:].flip(-1)], dim=-1)
    return x


class BicubicDown(nn.Module):
    """Antialiased MATLAB bicubic downsampling by 1/``scale``: (N, C, s*H, s*W) -> (N, C, H, W).

    imresize's separable L-tap kernel (L = 4s) after symmetric padding. A strided depthwise conv
    on the full-resolution input is slow on CPUs (~40 ms at 1280x720), so the input is
    pixel-unshuffled first and the two 1-D passes become small grouped convs at output resolution
    (~8 ms; ONNX-exportable). Matches imresize to float rounding when H, W >= the padding (6 px at x4).
    """

    def __init__(self, scale, channels=3):
        super().__init__()
        n = 8
        weights, first = _interior_taps(n * scale, n, 1.0 / scale)
        i = n // 2
        taps = weights[i].float()
        blocks = -(-len(taps) // scale)  # taps in blocks of s; zero taps fill the last block
        taps = F.pad(taps, (0, blocks * scale - len(taps)))
        self.scale, self.channels, self.blocks = scale, channels, blocks
        self.pad_start = int(scale * i - first[i])
        self.pad_end = len(taps) - scale - self.pad_start
        per_phase = taps.view(blocks, scale).t()  # [a, p] = taps[p * s + a]: tap p of row/column phase a
        # W pass: group (c, a) sums column phases b and blocks q; H pass: group c sums row phases a and blocks p
        self.register_buffer('kernel_w', per_phase.reshape(1, scale, 1, blocks).repeat(channels * scale, 1, 1, 1),
                             persistent=False)
        self.register_buffer('kernel_h', per_phase.reshape(1, scale, blocks, 1).repeat(channels, 1, 1, 1),
                             persistent=False)

    def forward(self, x):
        x = symmetric_pad(x, self.pad_start, self.pad_end, self.pad_start, self.pad_end)
        x = F.conv2d(pixel_unshuffle(x, self.scale), self.kernel_w, groups=self.channels * self.scale)
        return F.conv2d(x, self.kernel_h, groups=self.channels)

    def conv_macs(self, out):
        """MACs per sample of the forward that produced ``out`` (utils/flops.py convention)."""
        c, h, w = out.shape[1:]
        taps = self.scale * self.blocks
        return c * self.scale * (h + self.blocks - 1) * w * taps + c * h * w * taps


class BicubicUp(nn.Module):
    """MATLAB bicubic upsampling by ``scale``: (N, C, H, W) -> (N, C, s*H, s*W).

    Each of the s x s output phases is a fixed 4x4-tap filter of the symmetric-padded input; one
    grouped conv computes all phases at input resolution and PixelShuffle interleaves them.
    """

    def __init__(self, scale, channels=3):
        super().__init__()
        n = 8
        weights, first = _interior_taps(n, n * scale, float(scale))
        i = n // 2
        rows = range(scale * i, scale * i + scale)  # the s phases of interior input pixel i
        offsets = [int(first[r]) - i for r in rows]
        lo, hi = min(offsets), max(o + weights.shape[1] for o in offsets)
        phase = torch.zeros(scale, hi - lo, dtype=torch.float64)
        for j, (r, o) in enumerate(zip(rows, offsets)):
            phase[j, o - lo:o - lo + weights.shape[1]] = weights[r]
        kernel = torch.einsum('ak,bl->abkl', phase, phase).reshape(scale * scale, 1, hi - lo, hi - lo)
        self.scale, self.channels = scale, channels
        self.pad_start, self.pad_end = -lo, hi - 1
        self.register_buffer('kernel', kernel.float().repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x):
        x = symmetric_pad(x, self.pad_start, self.pad_end, self.pad_start, self.pad_end)
        return F.pixel_shuffle(F.conv2d(x, self.kernel, groups=self.channels), self.scale)

    def conv_macs(self, out):
        """MACs per sample of the forward that produced ``out``: one K x K tap set per output element."""
        return out.numel() // out.shape[0] * self.kernel.shape[-2] * self.kernel.shape[-1]
