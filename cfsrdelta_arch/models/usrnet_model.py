"""USRNetModel: TTASRModel for networks that take the degradation with the LR (USRNet)."""

import torch
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError
from cfsrdelta_arch.utils.fileio import OptionFileError
from .ttasr_model import TTASRModel


@MODEL_REGISTRY.register()
class USRNetModel(TTASRModel):
    """Train and test a non-blind network ``net(lq, kernel, scale, sigma)`` (USRNet) with BasicSR's runners.

    The data must carry 'kernel' (N, kh, kw) and 'noise_sigma' (N,) on the 0-255 scale:
    DegradedOnTheFlyDataset (training) and DegradedPairedDataset (the folders of
    scripts/make_degraded_lr.py) do. The network gets the top-level ``scale`` and σ = noise_sigma / 255.
    Self-ensemble and tiling are refused: both would need the kernel transformed with the image, and
    the data step assumes the whole image (circular boundary). Training uses ``train.pixel_opt``;
    best checkpoint, early stopping, exact resume and the non-finite-loss stop come from TTASRModel.
    """

    def __init__(self, opt):
        val = opt.get('val') or {}
        if val.get('self_ensemble') or val.get('tile'):
            raise OptionFileError('val.self_ensemble / val.tile: USRNetModel runs whole images only (the kernel '
                                  'would have to follow every flip, and the data step assumes the whole image)')
        super().__init__(opt)

    def feed_data(self, data):
        super().feed_data(data)
        if 'kernel' not in data or 'noise_sigma' not in data:
            raise DatasetError('USRNetModel needs the kernel and noise level with every LR: use '
                               'DegradedOnTheFlyDataset or DegradedPairedDataset (README, "Degraded inputs")')
        self.kernel = data['kernel'].to(self.device)
        self.sigma = (data['noise_sigma'].to(self.device).float() / 255.0).view(-1, 1, 1, 1)

    def _forward(self, net):
        return net(self.lq, self.kernel, self.opt['scale'], self.sigma)

    def optimize_parameters(self, current_iter):
        self.pixel_loss_step(current_iter, lambda: self._forward(self.net_g))

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self._forward(net)
        net.train(was_training)
