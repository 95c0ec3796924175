"""Resume BasicSR training runs exactly: find the latest intact training state, load it safely, and
continue the data where the interrupted run stopped.

:func:`patch_basicsr_train` (applied by ``import cfsrdelta_arch``) replaces
``basicsr.train.load_resume_state`` and ``basicsr.train.create_train_val_dataloader``. BasicSR's
``train_pipeline`` looks both up when it runs, so the plugin's runner, BasicSR's own and a foreign
project's train.py all use them, whichever was imported first.

Exactness: the model (TTASRModel) saves and restores every RNG state; this module makes the resumed
epoch skip the batches the interrupted run had consumed (BasicSR restarts it from its first batch)
and gives the train DataLoader its own per-epoch generator, so that starting an epoch's iterator
draws nothing from torch's global RNG. With ``num_worker_per_gpu: 0`` a resumed run then repeats the
uninterrupted one bit for bit. With workers, the resumed epoch's remaining batches hold the same
images but other random crops/flips (each worker's RNG advances with the samples it loaded, which
cannot be replayed without loading them); a warning says so.
"""
import collections
import contextlib
import io
import itertools
import os
import pickle
import re
import sys

import basicsr.train
import torch
from basicsr.utils import check_resume

from cfsrdelta_arch.models.ttasr_model import ResumeError
from cfsrdelta_arch.utils.collectives import from_rank_0

_basicsr_create_train_val_dataloader = basicsr.train.create_train_val_dataloader

# The only non-tensor, non-builtin class in a training state: BasicSR's MultiStepRestartLR keeps its
# milestones in a collections.Counter (current torch allows it by default, torch 2.6 does not).
TRAINING_STATE_GLOBALS = [collections.Counter]


class UnreadableFileError(ResumeError):
    """A truncated or otherwise corrupt file (a killed write from an older version, a full disk)."""


def load_checked(path):
    """``torch.load(path, weights_only=True)`` onto the CPU, with one-line errors.

    Raises:
        ResumeError: the file holds Python objects outside the safe set (a planted pickle); nothing
            in it is executed.
        UnreadableFileError: missing, truncated or corrupt.
    """
    try:
        with torch.serialization.safe_globals(TRAINING_STATE_GLOBALS):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise UnreadableFileError(f'{path}: unreadable ({str(err).splitlines()[0]})') from None
        found = re.search(r'(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)', str(err))
        what = f' (it calls {found.group(1)})' if found else ''
        raise ResumeError(f'{path}: refused to load: it holds Python objects outside the safe set{what}; '
                          'this project never writes such files, delete it unless you trust its source') from None
    except (OSError, RuntimeError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnreadableFileError(f'{path}: unreadable, truncated or corrupt ({reason[:120]})') from None


def resume_checkpoints(opt, resume_iter):
    """The ``net_<label>_<iter>.pth`` files that BasicSR's ``check_resume`` will load for ``resume_iter``."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    return [os.path.join(opt['path']['models'], f"net_{key[len('network_'):]}_{resume_iter}.pth")
            for key in opt if key.startswith('network_') and key not in ignored]


def latest_intact_state_path(opt):
    """Path of the newest complete training state whose checkpoints are intact too, or None.

    Newer states that are truncated or corrupt (or whose ``net_g_<iter>.pth`` is), or that were saved
    with ``validation_pending`` (see TTASRModel.save_training_state), are skipped with one line each on
    stderr (the log file does not exist yet at this point of BasicSR's pipeline).
    """
    folder = opt['path']['training_states']
    if not os.path.isdir(folder):
        return None
    iters = sorted((int(name[:-len('.state')]) for name in os.listdir(folder) if re.fullmatch(r'\d+\.state', name)),
                   reverse=True)
    for resume_iter in iters:
        path = os.path.join(folder, f'{resume_iter}.state')
        try:
            state = load_checked(path)
            for checkpoint in resume_checkpoints(opt, resume_iter):
                load_checked(checkpoint)
        except UnreadableFileError as err:
            problem = str(err)
        else:
            if not state.get('validation_pending'):
                return path
            problem = 'the run was killed before its validation had updated the best/patience record'
        print(f'Skipping training state of iter {resume_iter}: {problem}; trying the previous one',
              file=sys.stderr, flush=True)
    if iters:
        print(f'No intact training state in {folder}; starting from iteration 0', file=sys.stderr, flush=True)
    return None


def load_resume_state(opt):
    """Replacement for ``basicsr.train.load_resume_state``: the training state to resume from, or None.

    ``--auto_resume`` looks in this run's own ``path.training_states`` (absolute: under the
    repository or project root, from any working directory) and takes the newest intact state;
    otherwise ``path.resume_state`` is loaded. States are loaded with ``weights_only=True`` onto the
    CPU (the optimisers move their state onto the parameters' device), so resuming works with
    ``num_gpu: 0`` and a planted pickle is refused, never run. In a multi-process run rank 0 picks the
    state (and reports what it skips) and every rank loads that one.

    Raises:
        ResumeError: an unsafe file, or an unreadable ``path.resume_state``.
    """
    if opt['auto_resume']:
        path = from_rank_0(latest_intact_state_path, opt)
        if path is None:
            return None
        opt['path']['resume_state'] = path
    elif not opt['path'].get('resume_state'):
        return None
    state = load_checked(opt['path']['resume_state'])
    # BasicSR prints the checkpoint paths it sets; once per run is enough.
    with contextlib.redirect_stdout(sys.stdout if opt['rank'] == 0 else io.StringIO()):
        check_resume(opt, state['iter'])
    return state


class ResumableSampler(torch.utils.data.Sampler):
    """BasicSR's EnlargedSampler order; in the resumed epoch, the samples already consumed are skipped.

    Args:
        sampler (EnlargedSampler): the sampler BasicSR built (it shuffles with ``manual_seed(epoch)``).
        seed (int): ``manual_seed`` of the run; :attr:`generator` is reseeded with ``seed + epoch`` at
            every epoch and serves as the DataLoader's generator (worker base seeds).
        resume_epoch (int): the epoch the run resumes in (-1: not resuming).
        skip (int): samples of ``resume_epoch`` consumed before the checkpoint.
    """

    def __init__(self, sampler, seed, resume_epoch=-1, skip=0):
        self.sampler = sampler
        self.seed = seed
        self.resume_epoch = resume_epoch
        self.skip = skip
        self.epoch = 0
        self.generator = torch.Generator()

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)
        self.epoch = epoch
        self.generator.manual_seed(self.seed + epoch)

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip if self.epoch == self.resume_epoch else 0, None)

    def __len__(self):
        return len(self.sampler)


def create_train_val_dataloader(opt, logger):
    """``basicsr.train.create_train_val_dataloader`` with a resumable train sampler (same return value).

    When resuming from a state of (epoch e, iter k), the interrupted run had consumed
    ``k - e * len(train_loader)`` batches of epoch e (every epoch yields ``len(train_loader)`` batches,
    drop_last), so epoch e continues after them.
    """
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = _basicsr_create_train_val_dataloader(
        opt, logger)
    resume_epoch, skip = -1, 0
    if opt['path'].get('resume_state'):
        state = load_checked(opt['path']['resume_state'])
        consumed = state['iter'] - state['epoch'] * len(train_loader)
        if 0 <= consumed <= len(train_loader):
            resume_epoch, skip = state['epoch'], consumed * train_loader.batch_size
            logger.info(f"Resuming epoch {state['epoch']} after its first {consumed} batches")
        else:
            logger.warning(f"Cannot place iter {state['iter']} (epoch {state['epoch']}) in epochs of "
                           f'{len(train_loader)} batches (dataset or batch size changed?); epoch '
                           f"{state['epoch']} restarts from its first batch")
        if train_loader.num_workers > 0:
            logger.warning('num_worker_per_gpu > 0: the resumed epoch continues with the same images but other '
                           'random crops/flips, so this run will not repeat the uninterrupted one bit for bit '
                           '(num_worker_per_gpu: 0 does)')
    sampler = ResumableSampler(train_sampler, opt['manual_seed'], resume_epoch, skip)
    train_loader.batch_sampler.sampler = sampler  # the DataLoader draws its indices through its batch sampler
    train_loader.generator = sampler.generator
    return train_loader, sampler, val_loaders, total_epochs, total_iters


def patch_basicsr_train():
    """Point BasicSR's ``train_pipeline`` at :func:`load_resume_state` and :func:`create_train_val_dataloader`."""
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader
