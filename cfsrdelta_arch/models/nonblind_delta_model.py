"""NonBlindDeltaModel: BackboneDeltaModel for a refiner that is told the degradation (NonBlindRefineNet)."""
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.archs.bicubic_layers import BicubicDown
from .backbone_delta_model import BackboneDeltaModel
from .degradation_inputs import degradation_inputs
from .usrnet_model import refuse_tiles_and_ensemble

# The refiner's LR restorer (NonBlindRefineNet.lr_restorer): the part that ``train.lr_opt`` trains.
LR_RESTORER = 'lr_restorer'


@MODEL_REGISTRY.register()
class NonBlindDeltaModel(BackboneDeltaModel):
    """Train only a non-blind refiner on top of a frozen backbone: ``net_g(lq, kernel=, sigma=, degradation=)``.

    The data carries the degradation (DegradedOnTheFlyDataset, DegradedPairedDataset; see
    :func:`degradation_inputs`). Whole images only (self-ensemble and tiling are refused); no backbone
    cache (the LR is degraded on the fly). Everything else is BackboneDeltaModel's.

    ``train.lr_opt`` (a BasicSR loss option): a second loss, between the backbone's input that the
    refiner prepares for noisy samples (its ``lr_restorer`` after the pre-filter) and the clean
    bicubic LR of the HR patch (MATLAB bicubic of ``gt``). Without ``train.pixel_opt`` it is the only
    loss: only the LR restorer trains, and neither the backbone nor the rest of the refiner runs
    (a fast first stage, ~0.4 s per iteration of 32 patches on 2 CPU cores instead of ~3 s).
    """

    def __init__(self, opt):
        refuse_tiles_and_ensemble(opt, 'NonBlindDeltaModel')
        super().__init__(opt)

    def init_training_settings(self):
        train_opt = self.opt['train']
        lr_opt = train_opt.get('lr_opt')
        self.cri_lr = build_loss(lr_opt).to(self.device) if lr_opt else None
        refiner = self.get_bare_model(self.net_g).refiner
        if self.cri_lr is not None:
            if getattr(refiner, LR_RESTORER, None) is None:
                raise ValueError('train.lr_opt trains the refiner\'s lr_restorer, and network_g.refiner has none')
            self.bicubic_down = BicubicDown(self.opt['scale']).to(self.device)
        self.lr_only = self.cri_lr is not None and not train_opt.get('pixel_opt')
        if not self.lr_only:
            super().init_training_settings()
            return
        for name, param in refiner.named_parameters():  # frozen: the EMA copies them exactly
            if not name.startswith(LR_RESTORER + '.'):
                param.requires_grad_(False)
        get_root_logger().info('train.lr_opt without pixel_opt: training the LR restorer alone')
        train_opt['pixel_opt'] = lr_opt  # BasicSR refuses a run without a pixel or perceptual loss
        try:
            super().init_training_settings()
        finally:
            del train_opt['pixel_opt']
        self.cri_pix = None

    def feed_data(self, data):
        if 'base' in data:  # the backbone must run on the LR the refiner prepares (its pre-filter)
            raise ValueError('NonBlindDeltaModel runs the backbone itself; a cached SR_base (PairedCachedBaseDataset) '
                             'cannot be used')
        super().feed_data(data)
        self.degradation = degradation_inputs(data, self.device)

    def optimize_parameters(self, current_iter):
        if self.cri_lr is None:
            self.pixel_loss_step(current_iter, lambda: self.net_g(self.lq, base=self.base, **self.degradation))
            return
        prepared = {}

        def forward():
            if self.lr_only:
                prepared['lr'] = self.net_g(self.lq, output='backbone_input', **self.degradation)
                return None
            sr, prepared['lr'] = self.net_g(self.lq, base=self.base, output='both', **self.degradation)
            return sr

        self.pixel_loss_step(current_iter, forward, lambda: OrderedDict(l_lr=self.lr_loss(prepared['lr'])))

    def lr_loss(self, prepared):
        """``lr_opt``'s loss of the noisy samples' prepared LR (N, 3, H, W) against the clean bicubic LR."""
        noisy = self.degradation['sigma'].view(-1) > 0
        if not noisy.any():  # a zero on the restorer's graph, so that every process runs the same backward
            restorer = getattr(self.get_bare_model(self.net_g).refiner, LR_RESTORER)
            return sum(p.sum() for p in restorer.parameters()) * 0
        with torch.no_grad():
            target = self.bicubic_down(self.gt)
        return self.cri_lr(prepared[noisy], target[noisy])

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq, base=self.base, **self.degradation)
        net.train(was_training)
