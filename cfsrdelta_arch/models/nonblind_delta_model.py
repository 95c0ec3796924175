"""NonBlindDeltaModel: BackboneDeltaModel for a refiner that is told the degradation (NonBlindRefineNet)."""

import torch
from basicsr.utils.registry import MODEL_REGISTRY

from .backbone_delta_model import BackboneDeltaModel
from .degradation_inputs import degradation_inputs, ensembled, refuse_tiles


@MODEL_REGISTRY.register()
class NonBlindDeltaModel(BackboneDeltaModel):
    """Train only a non-blind refiner on top of a frozen backbone: ``net_g(lq, kernel=, sigma=, degradation=)``.

    The data carries the degradation (DegradedOnTheFlyDataset, DegradedPairedDataset; see
    :func:`degradation_inputs`). Whole images only (tiling is refused); ``val.self_ensemble`` flips the
    kernel with the LR ('gaussian8' LR only); no backbone cache (the LR is degraded on the fly).
    Everything else is BackboneDeltaModel's.
    """

    def __init__(self, opt):
        refuse_tiles(opt, 'NonBlindDeltaModel')
        super().__init__(opt)

    def feed_data(self, data):
        if 'base' in data:  # the backbone must run on the LR the refiner prepares (its pre-filter)
            raise ValueError('NonBlindDeltaModel runs the backbone itself; a cached SR_base (PairedCachedBaseDataset) '
                             'cannot be used')
        super().feed_data(data)
        self.degradation = degradation_inputs(data, self.device)

    def optimize_parameters(self, current_iter):
        self.pixel_loss_step(current_iter, lambda: self.net_g(self.lq, base=self.base, **self.degradation))

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        given = {key: value for key, value in self.degradation.items() if key != 'kernel'}
        with torch.no_grad():
            self.output = ensembled(lambda lq, kernel: net(lq, base=self.base, kernel=kernel, **given), self.lq,
                                    self.degradation['kernel'], self.degradation['degradation'], self.opt)
        net.train(was_training)
