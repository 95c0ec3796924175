"""USRNetModel: TTASRModel for networks that take the degradation with the LR (USRNet)."""

import torch
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.archs.degradation_psf import degradation_psf
from cfsrdelta_arch.utils.fileio import OptionFileError
from .degradation_inputs import degradation_inputs
from .ttasr_model import TTASRModel, refuse_losses_but_pixel


def refuse_tiles_and_ensemble(opt, model_name):
    """Non-blind models run whole images: the kernel would have to follow every flip of the
    self-ensemble, and their FFT data step assumes the whole image (circular boundary)."""
    val = opt.get('val') or {}
    if val.get('self_ensemble') or val.get('tile'):
        raise OptionFileError(f'val.self_ensemble / val.tile: {model_name} runs whole images only (the kernel '
                              'would have to follow every flip, and the data step assumes the whole image)')


@MODEL_REGISTRY.register()
class USRNetModel(TTASRModel):
    """Train and test a non-blind network ``net(lq, psf, scale, sigma)`` (USRNet) with BasicSR's runners.

    The data must carry the degradation (:func:`degradation_inputs`); the network gets the PSF of
    the sample's degradation model (archs/degradation_psf.py: the kernel itself for 'classical',
    kernel ⊗ bicubic for 'gaussian8'), the top-level ``scale`` and σ = noise_sigma / 255.
    Self-ensemble and tiling are refused. Training uses ``train.pixel_opt``; best checkpoint, early
    stopping, exact resume and the non-finite-loss stop come from TTASRModel.
    """

    def __init__(self, opt):
        refuse_tiles_and_ensemble(opt, 'USRNetModel')
        refuse_losses_but_pixel(opt, 'USRNetModel')
        super().__init__(opt)

    def feed_data(self, data):
        super().feed_data(data)
        inputs = degradation_inputs(data, self.device)
        self.psf = degradation_psf(inputs['kernel'], self.opt['scale'], inputs['degradation'])
        self.sigma = inputs['sigma']

    def _forward(self, net):
        return net(self.lq, self.psf, self.opt['scale'], self.sigma)

    def optimize_parameters(self, current_iter):
        self.pixel_loss_step(current_iter, lambda: self._forward(self.net_g))

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self._forward(net)
        net.train(was_training)
