"""L1 + ramped L1 on FFT magnitudes."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn
from torch.nn import functional as F


@LOSS_REGISTRY.register()
class L1FFTLoss(nn.Module):
    """``loss_weight * (L1(pred, target) + w(t) * L1(|FFT(pred)|, |FFT(target)|))``.

    FFT: 2-D, per image and channel, orthonormal (``norm='ortho'``), so magnitudes are on the pixel
    scale. The weight ramps linearly from 0 at iteration 0 to ``fft_weight`` at ``ramp_iters``
    (the prior art: 0.005 over 2,000 iterations), then stays there. ``ramp_iters: 0`` applies the
    full weight from the start.

    The iteration comes from :meth:`set_iter` (BackboneDeltaModel calls it every step, so a resumed run
    continues the ramp); without it the loss counts its own calls in training mode.

    Args:
        loss_weight (float): overall weight (1.0).
        fft_weight (float): final FFT-term weight (0.005).
        ramp_iters (int): iterations of the linear ramp (2000).
        reduction (str): 'mean' only.

    ``forward(pred, target)``: (N, C, H, W) tensors; returns a scalar.
    """

    def __init__(self, loss_weight=1.0, fft_weight=0.005, ramp_iters=2000, reduction='mean'):
        super().__init__()
        if reduction != 'mean':
            raise ValueError(f"L1FFTLoss supports reduction 'mean' only, got '{reduction}'")
        if ramp_iters < 0 or fft_weight < 0:
            raise ValueError('L1FFTLoss: fft_weight and ramp_iters must be >= 0')
        self.loss_weight = loss_weight
        self.fft_weight = fft_weight
        self.ramp_iters = ramp_iters
        self.current_iter = 0

    def set_iter(self, current_iter):
        self.current_iter = int(current_iter)

    def current_fft_weight(self):
        if self.ramp_iters == 0:
            return self.fft_weight
        return self.fft_weight * min(self.current_iter / self.ramp_iters, 1.0)

    def forward(self, pred, target):
        l1 = F.l1_loss(pred, target)
        fft_w = self.current_fft_weight()
        if self.training:
            self.current_iter += 1
        if fft_w == 0:
            return self.loss_weight * l1
        mag_pred = torch.fft.fft2(pred, norm='ortho').abs()
        mag_target = torch.fft.fft2(target, norm='ortho').abs()
        return self.loss_weight * (l1 + fft_w * F.l1_loss(mag_pred, mag_target))
