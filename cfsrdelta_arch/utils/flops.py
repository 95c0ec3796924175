"""Multiply-accumulate (MAC) counting for conv networks, the convention of SR efficiency tables.

Counts Conv2d MACs only (``out_pixels * out_ch * in_ch / groups * kh * kw``); norms, activations,
element-wise products and pixel (un)shuffles are negligible here and not counted. The CFSR paper's
"17.5G FLOPs at x4 for a 1280x720 output" is such a MAC count.
"""
import torch
from torch import nn


def count_conv_macs(net, *inputs):
    """Run ``net(*inputs)`` once without grad and return the total Conv2d MACs (int)."""
    total = 0

    def hook(module, _inp, out):
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() // out.shape[0] * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total
