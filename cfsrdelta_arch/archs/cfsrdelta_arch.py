"""CFSRDelta: a frozen SR backbone followed by a trainable residual refiner, in one module."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from cfsrdelta_arch.utils.weights import load_weights


def build_from_options(opt):
    """Instantiate a registered arch from an option dict ``{'type': name, **kwargs}``."""
    opt = dict(opt)
    return ARCH_REGISTRY.get(opt.pop('type'))(**opt)


@ARCH_REGISTRY.register()
class CFSRDelta(nn.Module):
    """``SR = refiner(backbone(LR), LR)``, where the refiner is residual (``sr + body(...)``).

    The backbone may be any registered SR network (CFSR, LESRCNN, EDSR, MSRResNet, RRDBNet,
    SwinIR, ...); the refiner is any module with ``forward(sr, lr)`` (RefineNet, LRRefineNet).
    The backbone is frozen: its parameters never require grad, it stays in eval mode, and its
    forward runs without an autograd graph.

    Args:
        backbone (dict): option dict of the backbone, e.g. ``{'type': 'CFSR', 'upscale': 4}``.
        refiner (dict): option dict of the refiner, e.g. ``{'type': 'RefineNet'}``.
        backbone_weights (str | None): checkpoint to load into the backbone (verified, strict).
        backbone_param_key (str): key inside that checkpoint ('params').

    Input (N, 3, H, W) RGB in [0, 1]; output (N, 3, s*H, s*W).
    """

    def __init__(self, backbone, refiner, backbone_weights=None, backbone_param_key='params'):
        super().__init__()
        self.backbone = build_from_options(backbone)
        self.refiner = build_from_options(refiner)
        self.has_pretrained_backbone = bool(backbone_weights)
        if backbone_weights:
            load_weights(self.backbone, backbone_weights, backbone_param_key)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode=True):
        """Switch the refiner only; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_backbone(self, lr):
        """SR_base (N, 3, s*H, s*W) in [0, 1] from LR (N, 3, H, W), without an autograd graph.

        Clamped to the image range, as the cached SR_base (16-bit PNG) is, so that a refiner sees
        the same input whether it trains from the cache or runs after the backbone.
        """
        with torch.no_grad():
            return self.backbone(lr).clamp_(0, 1)

    def forward(self, lr, base=None):
        """Refined SR; ``base`` (a precomputed/cached SR_base) skips the backbone."""
        if base is None:
            base = self.forward_backbone(lr)
        return self.refiner(base, lr)
