"""Option files: safe parsing, here and in BasicSR itself, and checks that turn user mistakes into one
line before any work starts.

- :func:`patch_basicsr_options` (applied by ``import cfsrdelta_arch``): BasicSR 1.4.2 parses option
  files with YAML's full loader, so ``!!python/object/apply:os.system [...]`` in an option file runs
  code. The patch gives ``basicsr.utils.options`` a safe loader (key order kept) and a
  ``parse_options`` that reads the file safely first and ends the program with one line naming the
  file and the refused tag; this covers foreign BasicSR projects that import the plugin too. It also
  gives BasicSR an ``init_dist`` that runs on CPUs (:func:`start_distributed`).
- :func:`check_command_line` (train.py, test.py): registry names (with the closest registered name),
  required keys, files and folders, scale agreement and the HR/LR pairs of paired datasets, checked
  from the YAML before BasicSR creates folders, loggers or networks.
- :func:`run_cli`: a user mistake ends an entry point with one line on stderr and exit status 1;
  ``--debug`` (BasicSR's flag, which also prefixes the run name with ``debug_``) shows the traceback.
"""
import argparse
import difflib
import inspect
import os
import sys

import basicsr
import basicsr.test
import basicsr.train
import basicsr.utils.options as basicsr_options
import numpy as np
import torch
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from cfsrdelta_arch.archs.backbone_delta_arch import WEIGHT_OPTIONS, build_from_options
from cfsrdelta_arch.app.distributed import DistributedSetupError, init_dist, uses_cuda
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError, checked_pairs
from cfsrdelta_arch.models.backbone_delta_model import BackboneDeltaModel
from cfsrdelta_arch.models.ttasr_model import SCHEDULERS, optimizer_names
from cfsrdelta_arch.utils.fileio import OptionFileError, OrderedSafeDumper, OrderedSafeLoader, load_yaml
from cfsrdelta_arch.utils.weights import CheckpointError, ensure_checkpoint, freeze_parameters

# The exceptions that mean "the user gave something unusable"; their messages are one line.
USER_ERRORS = (OptionFileError, CheckpointError, DatasetError, DistributedSetupError)

_basicsr_parse_options = basicsr_options.parse_options

# Keys BasicSR reads with opt[key] (a KeyError traceback when absent), by where they are needed.
TOP_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'datasets', 'network_g', 'path')
TRAIN_KEYS = ('train.total_iter', 'train.optim_g.type', 'train.scheduler.type', 'logger.print_freq',
              'logger.save_checkpoint_freq')
TEST_KEYS = ('val',)
TRAIN_DATASET_KEYS = ('batch_size_per_gpu', 'num_worker_per_gpu')
# Paired datasets whose files are checked (names and sizes, checked_pairs) and the keys they need.
PAIRED_DATASETS = {
    'PairedImageDataset': ('dataroot_gt', 'dataroot_lq', 'io_backend.type'),
    'PairedCachedBaseDataset': ('dataroot_gt', 'dataroot_lq', 'dataroot_base', 'io_backend.type'),
    'DegradedPairedDataset': ('dataroot_gt', 'dataroot_lq', 'io_backend.type'),
}
# Other datasets of the plugin and the keys they need.
DATASET_KEYS = {'DegradedOnTheFlyDataset': ('dataroot_gt', 'gt_size', 'io_backend.type')}


def safe_ordered_yaml():
    """Stand-in for ``basicsr.utils.options.ordered_yaml``: (safe loader, safe dumper), both keeping key
    order. BasicSR's own registers its constructor on PyYAML's full (unsafe) Loader on every call."""
    return OrderedSafeLoader, OrderedSafeDumper


def command_line(argv=None):
    """The BasicSR command-line arguments needed before BasicSR parses them: -opt, --launcher,
    --force_yml, --debug."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--force_yml', nargs='+')
    parser.add_argument('--debug', action='store_true')
    return parser.parse_known_args(argv)[0]


def parse_options(root_path, is_train=True):
    """BasicSR's ``parse_options``, with the option file first read by the safe loader.

    An unreadable file, a YAML syntax error (``file:line:column``) or a refused tag such as
    ``!!python/object/apply`` ends the program with one line on stderr, exit status 1, the way argparse
    ends it for a bad argument; with ``--debug`` the error is raised instead.
    """
    args = command_line()
    if args.opt is not None:  # without -opt, BasicSR's own argparse reports the usage error
        try:
            load_yaml(args.opt)
        except OptionFileError as err:
            if args.debug:
                raise
            sys.exit(f'error: {err}')
    return _basicsr_parse_options(root_path, is_train)


def start_distributed(launcher, backend=None, port=None):
    """Stand-in for BasicSR's ``init_dist``, which its ``parse_options`` calls for ``--launcher pytorch``
    and ``--launcher slurm`` (with the option file's ``dist_params``, slurm only): the same, but with
    the gloo backend on the CPU (:func:`cfsrdelta_arch.app.distributed.init_dist`). The device comes
    from the option file's ``num_gpu`` (``--force_yml`` applied), read from the command line that
    BasicSR is parsing."""
    args = command_line()
    opt = load_yaml(args.opt)
    apply_force_yml(opt, args.force_yml)
    init_dist(launcher, use_cuda=uses_cuda(opt.get('num_gpu', 0)), backend=backend, port=port)


def patch_basicsr_options():
    """Make BasicSR parse option files safely: its loader, and every name its modules imported
    ``parse_options`` under (``basicsr/__init__.py`` re-exports it from basicsr.train/test). Its
    ``parse_options`` starts multi-process runs with :func:`start_distributed`."""
    basicsr_options.ordered_yaml = safe_ordered_yaml
    basicsr_options.init_dist = start_distributed
    for module in (basicsr_options, basicsr.train, basicsr.test, basicsr):
        module.parse_options = parse_options


def run_cli(main, root_path):
    """Run an entry point's ``main(root_path)``; a user mistake (:data:`USER_ERRORS`) ends it with
    ``error: <one line>`` on stderr and exit status 1, or with the traceback under ``--debug``."""
    try:
        main(root_path)
    except USER_ERRORS as err:
        if command_line().debug:
            raise
        sys.exit(f'error: {err}')


def check_command_line(is_train, argv=None):
    """Check the option file named by ``-opt`` (with ``--force_yml`` applied) before BasicSR parses it.

    Returns:
        dict: test datasets to skip, {key: reason} (their ``dataroot_gt`` is missing); empty in training.

    Raises:
        OptionFileError, DatasetError: the first mistake found, one line naming the file and key.
    """
    args = command_line(argv)
    if args.opt is None:
        return {}
    opt = load_yaml(args.opt)
    try:
        apply_force_yml(opt, args.force_yml)
        return check_options(opt, is_train)
    except (OptionFileError, DatasetError) as err:
        raise type(err)(f'{args.opt}: {err}') from None


def apply_force_yml(opt, entries):
    """Apply ``--force_yml a:b=value`` overrides as BasicSR will (its value parsing), so the checks see
    the options the run uses."""
    for entry in entries or ():
        keys, _, value = entry.partition('=')
        *parents, last = keys.strip().split(':')
        section = option(opt, '.'.join(parents)) if parents else opt
        # BasicSR evaluates '[...]' values itself right after; the command line is the user's own.
        section[last] = basicsr_options._postprocess_yml_value(value.strip())


def option(opt, dotted, where=''):
    """``opt['a']['b']`` for ``dotted`` 'a.b'; a missing/empty key or a non-mapping section is an
    :class:`OptionFileError` naming the key (``where`` prefixes the names, e.g. 'datasets.test_1.')."""
    value, done = opt, []
    for key in dotted.split('.'):
        if not isinstance(value, dict):
            raise OptionFileError(f"{where}{'.'.join(done) or 'the file'} must be a mapping of options, "
                                  f'found {type(value).__name__}')
        done.append(key)
        if value.get(key) is None:
            raise OptionFileError(f"missing key {where}{'.'.join(done)}")
        value = value[key]
    return value


def check_name(name, names, kind, where, missing='is not registered', listed='registered'):
    """Raise :class:`OptionFileError` unless ``name`` is one of ``names``, suggesting the closest one."""
    if name in names:
        return
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name).lower(), by_lower, n=1)
    hint = f"did you mean '{by_lower[close[0]]}'?" if close else f"{listed}: {', '.join(sorted(names))}"
    raise OptionFileError(f"{where}: {kind} type '{name}' {missing}; {hint}")


def registered_names(registry):
    """Names of a BasicSR registry, BasicSR's own '<name>_basicsr' entries under their plain names."""
    return {n[:-len('_basicsr')] if n.endswith('_basicsr') else n for n in registry.keys()}


def check_registered(registry, kind, name, where):
    """:func:`check_name` against a BasicSR registry (its '<name>_basicsr' fallback included)."""
    check_name(name, registered_names(registry), kind, where)


def check_numbers_not_text(value, where):
    """Raise :class:`OptionFileError` for a number written as text anywhere in ``value`` (a section, a
    list): PyYAML reads ``5e-5`` (no dot, no exponent sign) as a string, and BasicSR's ``--force_yml``
    also ``-1``; torch then fails mid-setup, and ``milestones: [2e5]`` silently never decays the rate."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != 'type':
                check_numbers_not_text(item, f'{where}.{key}')
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_numbers_not_text(item, f'{where}[{i}]')
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return
        plain = f"{np.format_float_positional(number, trim='-')} or " if np.isfinite(number) else ''  # YAML: .inf
        raise OptionFileError(f"{where} is the text '{value}', not a number (write {plain}!!float {value})")


def check_optimization(train):
    """``train.optim_*`` (any torch.optim optimizer, see TTASRModel) and ``train.scheduler`` (one of
    BasicSR's): names and options, checked like the registry sections."""
    wording = {'listed': 'available'}
    for key, section in train.items():
        if key.startswith('optim_') and isinstance(section, dict):
            check_section(section, f'train.{key}', 'optimizer', optimizer_names(),
                          lambda name: getattr(torch.optim, name), {'params': None},
                          missing='is not in torch.optim', **wording)
    scheduler = option(train, 'scheduler', 'train.')
    check_section(scheduler, 'train.scheduler', 'scheduler', SCHEDULERS, SCHEDULERS.get,
                  {'optimizer': None}, missing="is not one of BasicSR's", **wording)


def check_refiner_training(opt):
    """The refiner options of ``train`` (read by BackboneDeltaModel and its subclasses only):
    ``grow_pretrained_refiner`` (true or false; true needs ``path.pretrain_network_g``) and
    ``fixed_refiner_params``, a list of names, each naming a trainable parameter (or module) of
    ``network_g.refiner`` (built here without its weight files), leaving at least one to train."""
    for key in ('grow_pretrained_refiner', 'fixed_refiner_params'):
        if opt['train'].get(key) is not None and not issubclass(
                registered_class(MODEL_REGISTRY, opt['model_type']), BackboneDeltaModel):
            raise OptionFileError(f"train.{key} is read by BackboneDeltaModel and its subclasses only, not by "
                                  f"model_type {opt['model_type']}")
    grow = opt['train'].get('grow_pretrained_refiner')
    if grow is not None and not isinstance(grow, bool):
        raise OptionFileError(f'train.grow_pretrained_refiner must be true or false, found {grow!r}')
    if grow and not opt['path'].get('pretrain_network_g'):
        raise OptionFileError('train.grow_pretrained_refiner: true needs path.pretrain_network_g (the checkpoint to grow)')
    fixed = opt['train'].get('fixed_refiner_params')
    if fixed is None:
        return
    where = 'train.fixed_refiner_params'
    if not isinstance(fixed, list) or not all(isinstance(name, str) for name in fixed):
        raise OptionFileError(f'{where} must be a list of parameter names, found {fixed!r}')
    refiner = build_from_options({k: v for k, v in opt['network_g']['refiner'].items() if k not in WEIGHT_OPTIONS})
    try:
        freeze_parameters(refiner, fixed)
    except ValueError as err:
        raise OptionFileError(f'{where}: {err}') from None


def registered_class(registry, name):
    """The class BasicSR's ``registry.get(name)`` returns, without its stray 'not found' print."""
    objects = dict(iter(registry))  # (name, class) pairs; a Registry has keys() but no []
    return objects.get(name) or objects[f'{name}_basicsr']


def check_call(cls, kwargs, where):
    """Raise :class:`OptionFileError` if ``cls(**kwargs)`` would fail on its arguments: an unknown
    option (with the closest parameter name) or a missing required one."""
    signature = inspect.signature(cls)
    params = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in params:
                close = difflib.get_close_matches(key, params, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (it takes {', '.join(params)})"
                raise OptionFileError(f"{where}: unknown option '{key}'{hint}")
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise OptionFileError(f'{where}: {err}') from None


def check_section(section, where, kind, names, class_of, extra=None, **wording):
    """Check a ``{type: Name, **kwargs}`` section built as ``class_of(Name)(**kwargs, **extra)``: the
    name is one of ``names`` (else the closest one is suggested; ``wording`` goes to :func:`check_name`)
    and the options fit the class. Returns ``kwargs``."""
    name = option(section, 'type', f'{where}.')
    check_name(name, names, kind, where, **wording)
    kwargs = {k: v for k, v in section.items() if k != 'type'}
    check_call(class_of(name), {**kwargs, **(extra or {})}, f'{where} ({name})')
    return kwargs


def check_typed(registry, kind, section, where, extra=None):
    """:func:`check_section` for a registry's section (archs, losses, metrics)."""
    return check_section(section, where, kind, registered_names(registry),
                         lambda name: registered_class(registry, name), extra)


def check_network(net_opt, where, scale):
    """Arch name and options, nested arch sections (BackboneDelta's backbone/refiner), upscale = scale,
    checkpoint files."""
    for key, value in check_typed(ARCH_REGISTRY, 'arch', net_opt, where).items():
        if isinstance(value, dict) and 'type' in value:
            check_network(value, f'{where}.{key}', scale)
        elif key in ('upscale', 'scale') and isinstance(value, int) and value != scale:
            raise OptionFileError(f'{where}.{key} is {value} but scale is {scale}: they must agree '
                                  '(and match the checkpoint)')
        elif key in WEIGHT_OPTIONS and value:
            check_checkpoint(value, f'{where}.{key}')


def check_checkpoint(path, where):
    """Raise :class:`OptionFileError` (naming the key ``where``) unless checkpoint ``path`` exists; a
    missing official file is downloaded here, before any work (:func:`ensure_checkpoint`)."""
    try:
        ensure_checkpoint(path)
    except CheckpointError as err:
        raise OptionFileError(f'{where}: {err}') from None


def check_datasets(opt, is_train):
    """Types and keys of every dataset, its folders, and the files of paired datasets (checked_pairs).

    Returns {key: reason} of test datasets whose ``dataroot_gt`` is missing (skipped by test runs; the
    test options list benchmarks that may not be on this machine); an error if that is all of them.
    """
    datasets = option(opt, 'datasets')
    if not isinstance(datasets, dict):
        raise OptionFileError(f'datasets must be a mapping of datasets, found {type(datasets).__name__}')
    if is_train:
        option(opt, 'datasets.train')
        other = [k for k in datasets if k != 'train' and k.split('_')[0] != 'val']
        if other:
            raise OptionFileError(f"datasets.{other[0]}: a training run takes the datasets 'train' and 'val*'")
    skipped = {}
    for key, dataset in datasets.items():
        where, phase = f'datasets.{key}', key.split('_')[0]
        dataset_type = option(dataset, 'type', f'{where}.')
        option(dataset, 'name', f'{where}.')
        check_registered(DATASET_REGISTRY, 'dataset', dataset_type, where)
        paired = dataset_type in PAIRED_DATASETS
        required = (PAIRED_DATASETS.get(dataset_type, ()) + DATASET_KEYS.get(dataset_type, ())
                    + (TRAIN_DATASET_KEYS if phase == 'train' else ()))
        for name in required + (('gt_size',) if paired and phase == 'train' else ()):
            option(dataset, name, f'{where}.')
        # BasicSR expands '~' in these two only.
        roots = {k: os.path.expanduser(v) if k in ('dataroot_gt', 'dataroot_lq') else v
                 for k, v in dataset.items() if k.startswith('dataroot_') and v}
        missing = [k for k, v in roots.items() if not os.path.exists(v)]
        if not is_train and 'dataroot_gt' in missing:
            skipped[key] = f"missing {roots['dataroot_gt']}"
            continue
        if missing:
            raise OptionFileError(f'{where}.{missing[0]}: {roots[missing[0]]} does not exist (see README, "Data")')
        if paired:
            try:
                checked_pairs({**dataset, **roots, 'scale': opt['scale'], 'phase': phase},
                              exact=dataset_type == 'PairedImageDataset' and phase == 'train',
                              images_only=dataset_type == 'DegradedPairedDataset')
            except DatasetError as err:
                raise DatasetError(f"{where} ({dataset['name']}): {err}") from None
    if skipped and len(skipped) == len(datasets):
        raise OptionFileError(f'none of the datasets exist ({"; ".join(f"{k}: {v}" for k, v in skipped.items())}); '
                              'make them as in README, "Data"')
    return skipped


def check_options(opt, is_train):
    """Check a parsed option file (see :func:`check_command_line`); messages name keys, not the file.

    Order: required keys, scale, registry names and their options (model, networks, losses, metrics),
    checkpoint files, then datasets (folders and pairs, the only part that reads more than the YAML).
    """
    for dotted in TOP_KEYS + (TRAIN_KEYS if is_train else TEST_KEYS):
        option(opt, dotted)
    if is_train and opt.get('val') is not None:  # BasicSR validates every val.val_freq iterations
        option(opt, 'val.val_freq')
    scale = opt['scale']
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise OptionFileError(f'scale must be a positive integer, found {scale!r}')
    check_registered(MODEL_REGISTRY, 'model', opt['model_type'], 'model_type')
    for key in opt:
        if key.startswith('network_'):
            check_network(option(opt, key), key, scale)
    if is_train:
        check_optimization(opt['train'])
        # every number of the section (rates, milestones, total_iter, loss weights, EMA decay) and the
        # loop's frequencies: BasicSR's --force_yml reads '1e4' or '-1' as text, as PyYAML reads 5e-5
        check_numbers_not_text(opt['train'], 'train')
        check_refiner_training(opt)
        for dotted in ('val.val_freq', 'logger.print_freq', 'logger.save_checkpoint_freq'):
            parent, _, key = dotted.partition('.')
            check_numbers_not_text((opt.get(parent) or {}).get(key), dotted)
    for key, section in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(section, dict):
            check_typed(LOSS_REGISTRY, 'loss', section, f'train.{key}')
    for key, section in ((opt.get('val') or {}).get('metrics') or {}).items():
        check_typed(METRIC_REGISTRY, 'metric', section, f'val.metrics.{key}', extra={'img': None, 'img2': None})
    for key, value in option(opt, 'path').items():
        if value and key.startswith('pretrain_network'):
            check_checkpoint(os.path.expanduser(value), f'path.{key}')
        elif value and key == 'resume_state' and not os.path.isfile(os.path.expanduser(value)):
            raise OptionFileError(f'path.{key}: {value} not found (see README, "Weights")')
    return check_datasets(opt, is_train)
