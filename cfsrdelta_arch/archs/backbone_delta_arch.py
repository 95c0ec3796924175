"""BackboneDelta: a frozen SR backbone followed by a trainable residual refiner, in one module."""
import torch
from torch import nn

from cfsrdelta_arch.utils.compat import get_arch, register_arch
from cfsrdelta_arch.utils.inference import padded_forward
from cfsrdelta_arch.utils.weights import load_weights

# Network options that name a checkpoint file: BackboneDelta's backbone, NonBlindRefineNet's frozen clean path.
WEIGHT_OPTIONS = ('backbone_weights', 'clean_weights')


def build_from_options(opt):
    """Instantiate a registered arch from an option dict ``{'type': name, **kwargs}``."""
    opt = dict(opt)
    return get_arch(opt.pop('type'))(**opt)


@register_arch
class BackboneDelta(nn.Module):
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
        backbone_pad_multiple (int): the backbone only accepts LR sizes divisible by this, e.g. a
            window-attention backbone such as BasicSR's SwinIR needs its ``window_size`` (which it
            does not pad to itself); the LR is mirror-padded to that multiple for the backbone and
            its output cropped back (:func:`cfsrdelta_arch.utils.inference.padded_forward`).
            1 (default) runs the backbone on the LR as it is. The refiner always sees the true size.

    Input (N, 3, H, W) RGB in [0, 1]; output (N, 3, s*H, s*W).
    """

    def __init__(self, backbone, refiner, backbone_weights=None, backbone_param_key='params',
                 backbone_pad_multiple=1):
        super().__init__()
        self.backbone_pad_multiple = int(backbone_pad_multiple)
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
            return padded_forward(self.backbone, lr, self.backbone_pad_multiple).clamp_(0, 1)

    @staticmethod
    def is_whole_state(state_dict):
        """True for a whole-network state dict (``backbone.*``/``refiner.*`` keys), False for a refiner's."""
        return any(k.startswith('backbone.') for k in state_dict)

    def load_refiner_or_whole(self, state_dict, strict=True):
        """Load a refiner checkpoint (what BackboneDeltaModel saves) or a whole exported BackboneDelta.

        Returns the module that received the weights (``self`` or ``self.refiner``).
        """
        target = self if self.is_whole_state(state_dict) else self.refiner
        target.load_state_dict(state_dict, strict=strict)
        return target

    def forward(self, lr, base=None, **degradation):
        """Refined SR (N, 3, s*H, s*W) of LR (N, 3, H, W).

        A refiner with a ``backbone_input(lr, **degradation)`` method (NonBlindRefineNet) chooses what
        the backbone runs on. ``base``: the backbone's output (for that input) computed elsewhere (a
        cached SR_base, or one backbone pass shared by several refiners); it skips the backbone and is clamped to [0, 1]
        like :meth:`forward_backbone`'s. ``degradation``: keyword arguments for a non-blind refiner
        (NonBlindRefineNet's ``kernel``, ``sigma``, ``degradation``).
        """
        if base is None:
            prepare = getattr(self.refiner, 'backbone_input', None)
            base = self.forward_backbone(prepare(lr, **degradation) if prepare else lr)
        else:
            base = base.clamp(0, 1)
        return self.refiner(base, lr, **degradation)
