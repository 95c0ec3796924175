"""BackboneDeltaModel: frozen pretrained backbone, trainable residual refiner, peak capture."""
import json
import os
from collections import OrderedDict

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.utils.weights import load_state_dict_file
from .ttasr_model import TTASRModel


class EarlyStopping(Exception):
    """Raised from validation when ``val.early_stopping.patience`` validations brought no gain.

    ``cfsrdelta_arch.app.runner.train_pipeline`` catches it and ends training normally; the best
    checkpoint has been saved by then.
    """


@MODEL_REGISTRY.register()
class BackboneDeltaModel(TTASRModel):
    """Train only the refiner of a ``BackboneDelta`` network on top of a frozen, pretrained backbone.

    The backbone's weights come with the network: ``network_g.backbone_weights`` (see BackboneDelta).
    Options used beyond BasicSR's SRModel:
    - ``path.pretrain_network_g``: refiner weights (what this model saves) or a whole exported
      BackboneDelta (keys ``backbone.*``/``refiner.*``).
    - data key ``base`` (from PairedCachedBaseDataset): a cached SR_base, which skips the backbone.
    - ``val.save_best: true``: save ``net_g_best.pth`` whenever the first validation metric of the
      first validation set improves, and record the iteration in ``best.json``.
    - ``val.early_stopping: {patience: P, min_delta: 0}``: stop after P validations without a gain.

    Checkpoints (``net_g_*.pth``) hold the refiner only; scripts/export_model.py writes the whole
    network for inference.
    """

    def __init__(self, opt):
        super().__init__(opt)
        if not self.get_bare_model(self.net_g).has_pretrained_backbone:
            get_root_logger().warning('No backbone weights given (network_g.backbone_weights): '
                                      'the frozen backbone is randomly initialised')

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """Load refiner weights, or a whole BackboneDelta when the file has ``backbone.*`` keys."""
        net = self.get_bare_model(net)
        target = net.load_refiner_or_whole(load_state_dict_file(load_path, param_key), strict=strict)
        get_root_logger().info(f'Loaded {target.__class__.__name__} from {load_path} [{param_key}]')

    def setup_optimizers(self):
        """Optimise the refiner's parameters only (no per-parameter log lines for the frozen backbone)."""
        train_opt = self.opt['train']
        refiner = self.get_bare_model(self.net_g).refiner
        params = [p for p in refiner.parameters() if p.requires_grad]
        optim_type = train_opt['optim_g'].pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **train_opt['optim_g'])
        self.optimizers.append(self.optimizer_g)
        frozen = sum(p.numel() for p in self.get_bare_model(self.net_g).backbone.parameters())
        get_root_logger().info(f'Training {sum(p.numel() for p in params):,d} refiner parameters; '
                               f'{frozen:,d} backbone parameters frozen')

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if optim_type == 'AdamW':
            return torch.optim.AdamW(params, lr, **kwargs)
        return super().get_optimizer(optim_type, params, lr, **kwargs)

    def model_ema(self, decay=0.999):
        """EMA of the refiner; the frozen backbone is copied, not averaged (``x*d + x*(1-d)`` is not
        exactly ``x`` in floating point, so BasicSR's version lets the EMA backbone drift)."""
        ema_params = dict(self.net_g_ema.named_parameters())
        for name, param in self.get_bare_model(self.net_g).named_parameters():
            if name.startswith('backbone.'):
                ema_params[name].data.copy_(param.data)
            else:
                ema_params[name].data.mul_(decay).add_(param.data, alpha=1 - decay)

    def feed_data(self, data):
        super().feed_data(data)
        self.base = data['base'].to(self.device) if 'base' in data else None

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq, base=self.base)
        loss_dict = OrderedDict()
        if hasattr(self.cri_pix, 'set_iter'):
            self.cri_pix.set_iter(current_iter)
        l_total = self.cri_pix(self.output, self.gt)
        loss_dict['l_pix'] = l_total
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

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

    def save(self, epoch, current_iter):
        self.save_refiner(current_iter)
        self.save_training_state(epoch, current_iter)

    def save_refiner(self, current_iter):
        """Write ``net_g_<current_iter>.pth`` holding the refiner (and its EMA copy, if any)."""
        refiners = [self.get_bare_model(self.net_g).refiner]
        keys = ['params']
        if hasattr(self, 'net_g_ema'):
            refiners.append(self.net_g_ema.refiner)
            keys.append('params_ema')
        self.save_network(refiners, 'net_g', current_iter, param_key=keys)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        if self.opt['is_train'] and isinstance(current_iter, int):
            self._capture_peak(dataloader.dataset.opt['name'], current_iter)

    def _capture_peak(self, dataset_name, current_iter):
        """Keep the best checkpoint on the first validation set; stop when patience runs out."""
        val_opt = self.opt['val']
        first_set = getattr(self, '_peak_dataset', None) or dataset_name
        self._peak_dataset = first_set
        if dataset_name != first_set or not self.metric_results:
            return
        metric = next(iter(val_opt['metrics']))
        better = val_opt['metrics'][metric].get('better', 'higher')
        value = self.metric_results[metric]
        best = getattr(self, '_peak', None)
        stop_opt = val_opt.get('early_stopping') or {}
        min_delta = float(stop_opt.get('min_delta', 0.0))
        improved = best is None or (value > best['value'] + min_delta if better == 'higher'
                                    else value < best['value'] - min_delta)
        logger = get_root_logger()
        if improved:
            self._peak = best = dict(dataset=dataset_name, metric=metric, value=value, iter=current_iter)
            self._stale = 0
            if val_opt.get('save_best', False):
                self.save_refiner('best')  # net_g_best.pth
                path = os.path.join(self.opt['path']['experiments_root'], 'best.json')
                with open(path, 'w') as f:
                    json.dump(best, f, indent=2)
            logger.info(f'Peak: {metric} {value:.4f} on {dataset_name} at iter {current_iter}')
        else:
            self._stale += 1
            logger.info(f'No gain for {self._stale} validation(s); best {metric} {best["value"]:.4f} '
                        f'at iter {best["iter"]}')
        patience = stop_opt.get('patience')
        if patience is not None and self._stale >= int(patience):
            raise EarlyStopping(f'early stop at iter {current_iter}: best {metric} {best["value"]:.4f} on '
                                f'{dataset_name} at iter {best["iter"]}')
