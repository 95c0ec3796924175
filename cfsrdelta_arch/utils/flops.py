"""Multiply-accumulate (MAC) counting for conv networks, the convention of SR efficiency tables.

Counts Conv2d MACs (``out_pixels * out_ch * in_ch / groups * kh * kw``) and those of modules that
report their own fixed convolutions through ``conv_macs(out)`` (the bicubic resizers of
archs/bicubic_layers.py, which call F.conv2d with fixed kernels); norms, activations,
element-wise products and pixel (un)shuffles are negligible here and not counted. The CFSR paper's
"17.5G FLOPs at x4 for a 1280x720 output" is such a MAC count.
"""
import torch
from torch import nn


def conv_macs_per_layer(net, *inputs):
    """Run ``net(*inputs)`` once without grad; [(module, MACs)] for every Conv2d call and every call of
    a module reporting its own fixed convolutions (``conv_macs(out)``), in call order."""
    layers = []

    def hook(module, _inp, out):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            layers.append((module, out.numel() // out.shape[0] * (module.in_channels // module.groups) * kh * kw))
        else:
            layers.append((module, module.conv_macs(out)))

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.Conv2d) or hasattr(m, 'conv_macs')]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in handles:
            h.remove()
    return layers


def count_conv_macs(net, *inputs):
    """Run ``net(*inputs)`` once without grad and return the total Conv2d MACs (int)."""
    return sum(macs for _, macs in conv_macs_per_layer(net, *inputs))
