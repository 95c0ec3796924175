"""TTASRModel: BasicSR's SRModel with test-time options, checked weight loading and training runs that
lose nothing (atomic checkpoints, exact resume, best checkpoint, early stopping, non-finite stop)."""
import json
import math
import os
import random
from collections import OrderedDict

import numpy as np
import torch
from basicsr.models import lr_scheduler
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import get_dist_info, master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DataParallel, DistributedDataParallel

from cfsrdelta_arch.utils.collectives import from_rank_0, gather_to_rank_0, mean_over_ranks
from cfsrdelta_arch.utils.fileio import OptionFileError, torch_save_atomic, write_text_atomic
from cfsrdelta_arch.utils.inference import DEFAULT_TILE_OVERLAP, super_resolve
from cfsrdelta_arch.utils.weights import load_weights


class ResumeError(ValueError):
    """A training state or checkpoint that must not or cannot be used; the message is one line."""


class EarlyStopping(SystemExit):
    """Raised from validation when ``val.early_stopping.patience`` validations brought no gain.

    A ``SystemExit`` with status 0: whatever loop called the validation (the plugin's runner,
    BasicSR's own ``train_pipeline``, a foreign project's train.py) ends there without a traceback,
    after the one log line and with the best checkpoint already saved. The plugin's
    ``cfsrdelta_arch.app.runner.train_pipeline`` catches it and returns normally.
    """

    def __init__(self, message):
        super().__init__(0)
        self.message = message


class NonFiniteLoss(SystemExit):
    """Raised when a training loss is NaN or infinite, after one error log line naming the iteration.

    A ``SystemExit`` with status 1: any train loop ends there, without a traceback and before it
    saves anything.
    """

    def __init__(self, message):
        super().__init__(1)
        self.message = message


# The schedulers BasicSR 1.4.2's setup_schedulers builds, by the option's ``type``.
SCHEDULERS = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
              'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}


def optimizer_names():
    """Names of torch.optim's optimizers (Adam, AdamW, SGD, ...), which ``train.optim_g.type`` may name."""
    return sorted(name for name, obj in vars(torch.optim).items()
                  if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer)


def resolve_device_count(opt):
    """Fall back to the CPU (``num_gpu: 0``) when the options ask for GPUs this machine lacks."""
    if opt.get('num_gpu', 0) != 0 and not torch.cuda.is_available():
        get_root_logger().warning(f"num_gpu: {opt['num_gpu']} but CUDA is not available; running on the CPU")
        opt['num_gpu'] = 0


def get_rng_states():
    """Every random generator that training draws from, in types ``torch.load(weights_only=True)`` accepts.

    python ``random`` (a tuple of ints), numpy's legacy global generator (its uint32 key as an int64
    tensor), torch CPU (a uint8 tensor) and, when present, every CUDA device.
    """
    np_state = np.random.get_state(legacy=False)
    return {
        'python': random.getstate(),
        'numpy': {'key': torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                  'pos': np_state['state']['pos'], 'has_gauss': np_state['has_gauss'], 'gauss': np_state['gauss']},
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states):
    """Restore what :func:`get_rng_states` returned (CUDA states only onto as many devices as saved)."""
    random.setstate(states['python'])
    np_state = states['numpy']
    np.random.set_state({'bit_generator': 'MT19937',
                         'state': {'key': np_state['key'].numpy().astype(np.uint32), 'pos': np_state['pos']},
                         'has_gauss': np_state['has_gauss'], 'gauss': np_state['gauss']})
    torch.set_rng_state(states['torch'])
    if states['cuda'] and torch.cuda.is_available() and len(states['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states['cuda'])


def refuse_losses_but_pixel(opt, model_name):
    """Models whose training step is :meth:`TTASRModel.pixel_loss_step` have one loss,
    ``train.pixel_opt``: a ``perceptual_opt`` would be ignored beside it and fail mid-step alone."""
    train_opt = opt.get('train') or {}
    if opt.get('is_train') and (train_opt.get('perceptual_opt') or not train_opt.get('pixel_opt')):
        raise OptionFileError(f'train: {model_name} trains with train.pixel_opt alone; give pixel_opt and no '
                              'perceptual_opt')


@MODEL_REGISTRY.register()
class TTASRModel(SRModel):
    """Single-network SR model for any registered arch (CFSR, LESRCNN, EDSR, ...).

    On top of ``SRModel``:
    - ``val.self_ensemble: true`` averages the 8 flip/transpose variants at test time;
    - ``val.tile: {size: 128}`` runs large images in overlapping LR tiles (``overlap``: LR context,
      default DEFAULT_TILE_OVERLAP);
    - upstream checkpoints are sha256-verified and a wrong network/scale is one clear error line;
    - ``num_gpu`` larger than the machine's GPU count falls back to the CPU with a warning.

    Training (``train.optim_g.type``: any torch.optim optimizer, e.g. Adam, AdamW, SGD; BasicSR 1.4.2
    builds Adam only) (any network, e.g. CFSR from scratch):
    - ``val.save_best: true``: ``net_g_best.pth`` and ``best.json`` (dataset, metric, value, iter) are
      written whenever the first metric on the first validation set improves by more than
      ``val.early_stopping.min_delta`` (default 0);
    - ``val.early_stopping: {patience: P, min_delta: 0}``: after P validations without such a gain,
      training ends (:class:`EarlyStopping`, exit status 0, one log line);
    - checkpoints and training states are written atomically; a training state also holds every RNG
      state and the best/patience record, so a resumed run continues exactly (validation draws no
      randomness from the training generators: their states are restored around it);
    - a NaN/infinite loss stops training at that iteration (:class:`NonFiniteLoss`, exit status 1)
      before anything is saved, so no checkpoint, state or best file ever holds the diverged weights.

    Multi-process training (``--launcher pytorch|slurm``, ``opt['dist']``): DDP on the CPU too (no
    device ids there); logged losses are averaged over all processes on every process, so a non-finite
    loss stops all of them at the same iteration; rank 0 validates and writes (checkpoints, states,
    best.json) and its best/early-stop decision is handed to every rank, so all stop together; a
    training state holds every rank's RNG states, so a resume with as many processes is exact.
    """

    def __init__(self, opt):
        resolve_device_count(opt)
        super().__init__(opt)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        net = self.get_bare_model(net)
        get_root_logger().info(f'Loading {net.__class__.__name__} from {load_path} [{param_key}]')
        load_weights(net, load_path, param_key, strict)

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        return getattr(torch.optim, optim_type)(params, lr, **kwargs)  # the name is checked with the options

    def model_to_device(self, net):
        """BasicSR's ``model_to_device`` with DDP on the CPU too: ``device_ids`` only for a GPU.

        DDP all-reduces the gradients of the parameters that require grad, so a BackboneDelta is
        wrapped whole: its frozen backbone takes no part in the reduction (DDP only copies rank 0's
        copy to the others once, at wrapping time).
        """
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            return DistributedDataParallel(net, device_ids=device_ids,
                                           find_unused_parameters=self.opt.get('find_unused_parameters', False))
        if self.opt['num_gpu'] > 1:
            return DataParallel(net)
        return net

    def _network_for_test(self):
        # Unwrapped: under DDP a forward syncs buffers with the other ranks, which do not validate.
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    def _inference_options(self):
        val = self.opt.get('val') or {}
        tile = val.get('tile') or {}
        return dict(self_ensemble_on=bool(val.get('self_ensemble', False)),
                    tile_size=tile.get('size'), tile_overlap=tile.get('overlap', DEFAULT_TILE_OVERLAP))

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = super_resolve(net, self.lq, self.opt['scale'], **self._inference_options())
        net.train(was_training)

    # ---- training: losses ---------------------------------------------------------------------------

    def optimize_parameters(self, current_iter):
        super().optimize_parameters(current_iter)
        self.stop_on_non_finite_loss(current_iter)

    def pixel_loss_step(self, current_iter, forward):
        """One optimiser step on ``train.pixel_opt``'s loss of ``forward()`` (the network's output for
        the current batch), for models whose network takes more than the LR. The loss is told the
        iteration (L1FFTLoss's ramp) and checked before the step, so the weights stay finite."""
        self.optimizer_g.zero_grad()
        self.output = forward()
        if hasattr(self.cri_pix, 'set_iter'):
            self.cri_pix.set_iter(current_iter)
        l_total = self.cri_pix(self.output, self.gt)
        self.log_dict = self.reduce_loss_dict(OrderedDict(l_pix=l_total))
        self.stop_on_non_finite_loss(current_iter)
        l_total.backward()
        self.optimizer_g.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def reduce_loss_dict(self, loss_dict):
        """{name: float} of the losses, each averaged over all processes on every process (BasicSR's
        averages onto rank 0 only), so that every rank takes the same non-finite-loss decision."""
        with torch.no_grad():
            losses = mean_over_ranks(torch.stack([loss.detach().mean() for loss in loss_dict.values()]))
        return OrderedDict(zip(loss_dict, losses.tolist()))

    def stop_on_non_finite_loss(self, current_iter):
        """Raise :class:`NonFiniteLoss` naming the iteration if a logged loss is NaN/inf (logged once,
        by rank 0; the losses are the same on every rank, so all stop here)."""
        bad = {k: v for k, v in self.log_dict.items() if not math.isfinite(v)}
        if bad:
            losses = ', '.join(f'{k}={v}' for k, v in bad.items())
            message = (f'non-finite loss at iter {current_iter} ({losses}); training stopped, nothing saved for '
                       'this iteration (lower the learning rate or resume from the last checkpoint)')
            if get_dist_info()[0] == 0:
                get_root_logger().error(message)
            raise NonFiniteLoss(message)

    # ---- training: checkpoints and states ------------------------------------------------------------

    def save(self, epoch, current_iter):
        self.save_weights(current_iter)
        self.save_training_state(epoch, current_iter)

    def save_weights(self, current_iter):
        """Write ``net_g_<current_iter>.pth`` ('latest' for -1, 'best' for the best checkpoint)."""
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's ``save_network`` written atomically (a kill leaves the old file or the new one)."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        save_dict = {key: {k[7:] if k.startswith('module.') else k: v.cpu()
                           for k, v in self.get_bare_model(n).state_dict().items()}
                     for n, key in zip(nets, keys, strict=True)}
        label = 'latest' if current_iter == -1 else current_iter
        torch_save_atomic(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    def save_training_state(self, epoch, current_iter):
        """``training_states/<iter>.state``, written atomically by rank 0: BasicSR's epoch, iter,
        optimiser and scheduler states, plus the RNG states of every rank (a list indexed by rank; every
        rank must call this) and the best/patience record (see :meth:`resume_training`).

        BasicSR saves before it validates the same iteration; when that validation updates the record,
        the state is saved with ``validation_pending: True`` and rewritten after it, so a run killed in
        between is resumed from the previous state (``cfsrdelta_arch.app.resume``), not with a stale record.
        """
        if current_iter == -1:
            return
        self._write_training_state(epoch, current_iter, gather_to_rank_0(get_rng_states()))

    @master_only
    def _write_training_state(self, epoch, current_iter, rng):
        pending = (self._tracks_best() and current_iter % self.opt['val']['val_freq'] == 0
                   and getattr(self, '_validated_iter', None) != current_iter)
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers],
                 'rng': rng,
                 'trainable': self._trainable_names(),
                 'best': getattr(self, '_best', None),
                 'validation_pending': pending,
                 # BasicSR's per-metric record holds numpy floats, which weights_only loading refuses.
                 'best_metric_results': {name: {metric: dict(record, val=float(record['val']))
                                                for metric, record in records.items()}
                                         for name, records in getattr(self, 'best_metric_results', {}).items()}}
        torch_save_atomic(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))
        self._saved_state = (epoch, current_iter, rng)

    def _trainable_names(self):
        """Names of the parameters the optimiser trains, in its order (a resumed run must match them)."""
        return [name for name, p in self.get_bare_model(self.net_g).named_parameters() if p.requires_grad]

    def resume_training(self, resume_state):
        """Restore optimisers, schedulers, the best/patience record and this rank's RNG states.

        The RNGs are restored last: the pipeline has built the datasets and networks (which draw from
        them) by now, and the next draw is the next training batch's augmentation. A state saved by
        another number of processes leaves each rank's generators as seeded (BasicSR seeds rank r with
        ``manual_seed + r``).
        """
        trained, trainable = resume_state.get('trainable'), self._trainable_names()  # absent in earlier states
        if trained is not None and trained != trainable:
            changed = sorted(set(trained).symmetric_difference(trainable)) or ['their order']
            raise ResumeError(f"the training state of iter {resume_state['iter']} was saved with other trainable "
                              f"parameters (differing: {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}); "
                              'resume with the options it was saved with, or start a new run')
        super().resume_training(resume_state)
        self._best = resume_state.get('best')
        if resume_state.get('best_metric_results'):
            self.best_metric_results = resume_state['best_metric_results']
        rng = resume_state.get('rng')
        if isinstance(rng, dict):  # written by a single-process run of an earlier version
            rng = [rng]
        rank, world_size = get_dist_info()
        if rng is not None and len(rng) == world_size:
            set_rng_states(rng[rank])
            return
        saved_by = ('holds no RNG states (written by another version)' if rng is None
                    else f'was saved by {len(rng)} process(es), this run has {world_size}')
        get_root_logger().warning(f"The training state of iter {resume_state['iter']} {saved_by}; the resumed run "
                                  'will not repeat the uninterrupted one exactly')

    # ---- training: validation, best checkpoint, early stopping ---------------------------------------

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        rng = get_rng_states()
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        set_rng_states(rng)
        if self._tracks_best() and isinstance(current_iter, int) and self.metric_results:
            self._track_best(dataloader.dataset.opt['name'], current_iter)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """Rank 0 validates, as in BasicSR, then hands its best/patience record and early-stop decision
        to every rank: all ranks hold the same record and stop at the same iteration (a rank that went
        on alone would wait forever for the others in its next gradient all-reduce)."""
        def validate():
            try:
                self.nondist_validation(dataloader, current_iter, tb_logger, save_img)
            except EarlyStopping as stop:
                return getattr(self, '_best', None), stop.message
            return getattr(self, '_best', None), None

        self._best, stop = from_rank_0(validate)
        if stop is not None:
            raise EarlyStopping(stop)

    def _tracks_best(self):
        val_opt = self.opt.get('val') or {}
        return bool(self.opt['is_train'] and (val_opt.get('save_best') or val_opt.get('early_stopping')))

    def _track_best(self, dataset_name, current_iter):
        """Keep the best checkpoint on the first validation set; stop when patience runs out.

        The training state of this iteration (saved just before this validation) is rewritten with the
        updated record, so that a resume from it starts where this validation left off.
        """
        val_opt = self.opt['val']
        best = getattr(self, '_best', None)
        if best is not None and dataset_name != best['dataset']:
            return
        metric = next(iter(val_opt['metrics']))
        higher = val_opt['metrics'][metric].get('better', 'higher') == 'higher'
        value = float(self.metric_results[metric])
        stop_opt = val_opt.get('early_stopping') or {}
        min_delta = float(stop_opt.get('min_delta', 0.0))
        logger = get_root_logger()
        if best is None or (value > best['value'] + min_delta if higher else value < best['value'] - min_delta):
            best = dict(dataset=dataset_name, metric=metric, value=value, iter=current_iter, stale=0)
            if val_opt.get('save_best', False):
                self.save_weights('best')  # net_g_best.pth
                write_text_atomic(os.path.join(self.opt['path']['experiments_root'], 'best.json'),
                                  json.dumps({k: v for k, v in best.items() if k != 'stale'}, indent=2))
            logger.info(f'New best: {metric} {value:.4f} on {dataset_name} at iter {current_iter}')
        else:
            best = dict(best, stale=best['stale'] + 1)
            logger.info(f"No gain for {best['stale']} validation(s); best {metric} {best['value']:.4f} "
                        f"at iter {best['iter']}")
        self._best = best
        self._validated_iter = current_iter
        saved = getattr(self, '_saved_state', None)
        if saved is not None and saved[1] == current_iter:
            self._write_training_state(*saved)
        patience = stop_opt.get('patience')
        if patience is not None and best['stale'] >= int(patience):
            message = (f"early stop at iter {current_iter}: best {metric} {best['value']:.4f} on {dataset_name} "
                       f"at iter {best['iter']}"
                       + ('; the best weights are models/net_g_best.pth (see best.json)'
                          if val_opt.get('save_best') else ''))
            logger.info(message)
            raise EarlyStopping(message)
