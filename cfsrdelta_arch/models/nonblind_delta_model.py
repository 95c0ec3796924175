"""NonBlindDeltaModel: BackboneDeltaModel for a refiner that is told the degradation (NonBlindRefineNet)."""
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.archs.bicubic_layers import BicubicDown
from cfsrdelta_arch.utils.weights import load_state_dict_file
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
    bicubic LR of the HR patch (MATLAB bicubic of ``gt``); the restorer's only training signal, since
    the frozen backbone runs without a graph. Without ``train.pixel_opt`` it is the only
    loss: only the LR restorer trains, and neither the backbone nor the rest of the refiner runs
    (a fast first stage, ~0.4 s per iteration of 32 patches on 2 CPU cores instead of ~3 s).
    """

    def __init__(self, opt):
        refuse_tiles_and_ensemble(opt, 'NonBlindDeltaModel')
        super().__init__(opt)

    def _lr_only(self):
        """True for a run with ``train.lr_opt`` and no ``pixel_opt``: the LR restorer trains alone."""
        train_opt = self.opt.get('train') or {}
        return self.is_train and bool(train_opt.get('lr_opt')) and not train_opt.get('pixel_opt')

    def model_to_device(self, net):
        """Freeze all but the LR restorer of a restorer-only run *before* DDP wraps the network: DDP
        waits for a gradient of every parameter that required grad when it was wrapped."""
        if self._lr_only():
            for name, param in net.refiner.named_parameters():  # frozen: the EMA copies them exactly
                if not name.startswith(LR_RESTORER + '.'):
                    param.requires_grad_(False)
        return super().model_to_device(net)

    def init_training_settings(self):
        train_opt = self.opt['train']
        if train_opt.get('perceptual_opt'):
            raise ValueError('NonBlindDeltaModel has no perceptual loss; use pixel_opt and/or lr_opt')
        lr_opt = train_opt.get('lr_opt')
        self.cri_lr = build_loss(lr_opt).to(self.device) if lr_opt else None
        restorer = getattr(self.get_bare_model(self.net_g).refiner, LR_RESTORER, None)
        if self.cri_lr is not None and restorer is None:
            raise ValueError('train.lr_opt trains the refiner\'s lr_restorer, and network_g.refiner has none')
        if self.cri_lr is None and restorer is not None and any(p.requires_grad for p in restorer.parameters()):
            raise ValueError('network_g.refiner.lr_restorer only learns from train.lr_opt (the backbone runs '
                             'without a graph, so pixel_opt does not reach it): add lr_opt')
        if self.cri_lr is not None:
            self.bicubic_down = BicubicDown(self.opt['scale']).to(self.device)
        self.lr_only = self._lr_only()
        if not self.lr_only:
            super().init_training_settings()
        else:
            get_root_logger().info('train.lr_opt without pixel_opt: training the LR restorer alone')
            had_pixel_opt, pixel_opt = 'pixel_opt' in train_opt, train_opt.get('pixel_opt')
            train_opt['pixel_opt'] = lr_opt  # BasicSR refuses a run without a pixel or perceptual loss
            try:
                super().init_training_settings()
            finally:
                if had_pixel_opt:
                    train_opt['pixel_opt'] = pixel_opt
                else:
                    del train_opt['pixel_opt']
            self.cri_pix = None
        if restorer is not None and hasattr(self, 'net_g_ema'):
            self._start_ema_restorer(restorer)

    def _start_ema_restorer(self, restorer):
        """A restorer that the starting checkpoint lacks (new in this run, ``strict_load_g: false``)
        starts in the EMA copy as in the network, not as the EMA's own random initialisation."""
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is None or self.opt['path'].get('resume_state'):
            return  # BasicSR's EMA copied the network; a resumed run restores both
        if any(k.startswith(LR_RESTORER + '.') for k in load_state_dict_file(load_path, 'params_ema')):
            return
        getattr(self.net_g_ema.refiner, LR_RESTORER).load_state_dict(restorer.state_dict())

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
            target = self.bicubic_down(self.gt).clamp_(0, 1)  # as the prepared LR is
        return self.cri_lr(prepared[noisy], target[noisy])

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq, base=self.base, **self.degradation)
        net.train(was_training)
