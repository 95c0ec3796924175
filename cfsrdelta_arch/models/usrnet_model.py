"""USRNetModel: TTASRModel for networks that take the degradation with the LR (USRNet)."""

import functools

import torch
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.archs.degradation_psf import degradation_psf
from .degradation_inputs import degradation_inputs, ensembled, refuse_tiles
from .ttasr_model import TTASRModel, refuse_losses_but_pixel


@MODEL_REGISTRY.register()
class USRNetModel(TTASRModel):
    """Train and test a non-blind network ``net(lq, psf, scale, sigma)`` (USRNet) with BasicSR's runners.

    The data must carry the degradation (:func:`degradation_inputs`); the network gets the PSF of
    the sample's degradation model (archs/degradation_psf.py: the kernel itself for 'classical',
    kernel ⊗ bicubic for 'gaussian8'), the top-level ``scale`` and σ = noise_sigma / 255.
    ``val.self_ensemble`` flips the PSF with the LR ('gaussian8' LR only); tiling is refused. Training
    uses ``train.pixel_opt``; best checkpoint, early stopping, exact resume and the non-finite-loss stop
    come from TTASRModel.
    """

    def __init__(self, opt):
        refuse_tiles(opt, 'USRNetModel')
        refuse_losses_but_pixel(opt, 'USRNetModel')
        super().__init__(opt)

    def feed_data(self, data):
        super().feed_data(data)
        inputs = degradation_inputs(data, self.device)
        self.psf = degradation_psf(inputs['kernel'], self.opt['scale'], inputs['degradation'])
        self.sigma, self.models = inputs['sigma'], inputs['degradation']

    def _forward(self, net, lq, psf):
        return net(lq, psf, self.opt['scale'], self.sigma)

    def optimize_parameters(self, current_iter):
        self.pixel_loss_step(current_iter, lambda: self._forward(self.net_g, self.lq, self.psf))

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = ensembled(functools.partial(self._forward, net), self.lq, self.psf, self.models, self.opt)
        net.train(was_training)
