"""BackboneDeltaModel: frozen pretrained backbone, trainable residual refiner."""

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.utils.weights import embed_state_dict, freeze_parameters, load_state_dict_file, naming_checkpoint
from .ttasr_model import TTASRModel, refuse_losses_but_pixel


@MODEL_REGISTRY.register()
class BackboneDeltaModel(TTASRModel):
    """Train only the refiner of a ``BackboneDelta`` network on top of a frozen, pretrained backbone.

    The backbone's weights come with the network: ``network_g.backbone_weights`` (see BackboneDelta).
    Options used beyond BasicSR's SRModel:
    - ``path.pretrain_network_g``: refiner weights (what this model saves) or a whole exported
      BackboneDelta (keys ``backbone.*``/``refiner.*``); ``train.grow_pretrained_refiner: true`` grows a
      smaller refiner's weights into this one (:meth:`load_network`).
    - data key ``base`` (from PairedCachedBaseDataset): a cached SR_base, which skips the backbone.

    Best-checkpoint capture, early stopping, exact resume and the non-finite-loss stop come from
    TTASRModel. Checkpoints (``net_g_*.pth``, ``net_g_best.pth`` included) hold the refiner only;
    scripts/export_model.py writes the whole network for inference.
    """

    def __init__(self, opt):
        refuse_losses_but_pixel(opt, type(self).__name__)
        super().__init__(opt)
        if not self.get_bare_model(self.net_g).has_pretrained_backbone:
            get_root_logger().warning('No backbone weights given (network_g.backbone_weights): '
                                      'the frozen backbone is randomly initialised')

    def model_to_device(self, net):
        """Freeze ``train.fixed_refiner_params`` before the network is wrapped (DDP reduces the gradients
        of the parameters that require grad at wrapping time; the names are checked with the options).

        The option names refiner parameters (or module prefixes) to keep as loaded, e.g. ``[log_alpha,
        noise_gain]`` to fine-tune NonBlindRefineNet's bodies without changing its noise-free 'gaussian8'
        outputs (no body runs there). Frozen, they are copied by the EMA, not averaged.
        """
        if self.is_train:
            freeze_parameters(net.refiner, self.opt['train'].get('fixed_refiner_params') or [])
        return super().model_to_device(net)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """Load refiner weights, or a whole BackboneDelta when the file has ``backbone.*`` keys. With
        ``train.grow_pretrained_refiner``, refiner weights of a smaller refiner of the same kind are embedded
        (:func:`embed_state_dict`): the network starts as the checkpoint's, and learns with what is new."""
        net = self.get_bare_model(net)
        state_dict = load_state_dict_file(load_path, param_key)
        with naming_checkpoint(load_path):
            if (self.opt.get('train') or {}).get('grow_pretrained_refiner'):
                # net_g is loaded first: the EMA copy takes its draw for what is new, so both start equal
                refiner = self.get_bare_model(self.net_g).refiner
                state_dict = embed_state_dict(refiner.state_dict(), state_dict,
                                              {name for name, p in refiner.named_parameters() if p.requires_grad})
            target = net.load_refiner_or_whole(state_dict, strict=strict)
        get_root_logger().info(f'Loaded {target.__class__.__name__} from {load_path} [{param_key}]')

    def setup_optimizers(self):
        """Optimise the refiner's trainable parameters only (no per-parameter log lines for the frozen backbone)."""
        train_opt = self.opt['train']
        refiner = self.get_bare_model(self.net_g).refiner
        params = [p for p in refiner.parameters() if p.requires_grad]
        optim_type = train_opt['optim_g'].pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **train_opt['optim_g'])
        self.optimizers.append(self.optimizer_g)
        frozen = sum(p.numel() for p in self.get_bare_model(self.net_g).backbone.parameters())
        fixed = train_opt.get('fixed_refiner_params')
        get_root_logger().info(f'Training {sum(p.numel() for p in params):,d} refiner parameters'
                               f'{f" (kept as loaded: {fixed})" if fixed else ""}; '
                               f'{frozen:,d} backbone parameters frozen')

    def model_ema(self, decay=0.999):
        """EMA of the refiner's trained parameters; frozen ones (the backbone, a refiner's frozen part
        such as NonBlindRefineNet's clean path) are copied, not averaged (``x*d + x*(1-d)`` is not
        exactly ``x`` in floating point, so BasicSR's version lets them drift)."""
        ema_params = dict(self.net_g_ema.named_parameters())
        for name, param in self.get_bare_model(self.net_g).named_parameters():
            if not param.requires_grad:
                ema_params[name].data.copy_(param.data)
            else:
                ema_params[name].data.mul_(decay).add_(param.data, alpha=1 - decay)

    def feed_data(self, data):
        super().feed_data(data)
        self.base = data['base'].to(self.device) if 'base' in data else None

    def optimize_parameters(self, current_iter):
        self.pixel_loss_step(current_iter, lambda: self.net_g(self.lq, base=self.base))

    def test(self):
        # A cached SR_base is only valid for the untransformed, untiled input.
        opts = self._inference_options()
        if self.base is not None and not opts['self_ensemble_on'] and not opts['tile_size']:
            net = self._network_for_test()
            was_training = net.training
            net.eval()
            with torch.no_grad():
                self.output = net(self.lq, base=self.base)
            net.train(was_training)
        else:
            super().test()

    def save_weights(self, current_iter):
        """Write ``net_g_<current_iter>.pth`` holding the refiner (and its EMA copy, if any)."""
        refiners = [self.get_bare_model(self.net_g).refiner]
        keys = ['params']
        if hasattr(self, 'net_g_ema'):
            refiners.append(self.net_g_ema.refiner)
            keys.append('params_ema')
        self.save_network(refiners, 'net_g', current_iter, param_key=keys)
