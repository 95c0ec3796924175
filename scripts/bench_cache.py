"""Time CFSR-Delta training iterations with the backbone run on the fly vs read from the SR_base cache.

Builds two BackboneDeltaModel instances with basicsr.models.build_model from one train option file
(default: options/train/train_CFSRDelta_LRRefineNet_x4.yml, i.e. x4, LRRefineNet, batch 32,
gt_size 96), identical but for the training data:
  on the fly: BasicSR's PairedImageDataset (LR/HR from disk); the frozen CFSR backbone runs on
              every batch inside the model, as without a cache;
  cached:     PairedCachedBaseDataset with cache_in_memory (SR_base from the 16-bit PNG cache,
              decoded once: the in-memory cache is filled before timing).
Both use the same refiner, batch size, patch size and datasets/train291 images, in one process,
alternating iteration by iteration so that background load affects both alike. After --warmup
untimed iterations each, --iters iterations are timed: data (next batch) and step
(feed_data + optimize_parameters), in seconds per iteration.

Needs: datasets/train291 (scripts/prepare_training_data.py), its x4 cache
(scripts/cache_backbone_outputs.py) and weights/official/CFSR_x4.pth (scripts/fetch_weights.py).

Example (run when the machine is otherwise idle):
  python scripts/bench_cache.py --warmup 5 --iters 50
"""
import argparse
import logging
import os
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401  (registers the plugin; installs the basicsr compat shim)
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils import get_root_logger
from torch.utils.data import DataLoader

from cfsrdelta_arch.utils.tables import markdown_table

DEFAULT_OPT = os.path.join('options', 'train', 'train_CFSRDelta_LRRefineNet_x4.yml')


def load_train_options(path, batch_size, gt_size, num_gpu):
    """Train option dict of ``path`` as BasicSR's parser would set it up for one process, with overrides.

    Args:
        batch_size, gt_size (int | None): overrides of the train dataset's values.
        num_gpu (int): 0 for the CPU.
    """
    with open(path) as f:
        opt = yaml.safe_load(f)
    if opt.get('model_type') != 'BackboneDeltaModel':
        raise ValueError(f"{path}: model_type must be BackboneDeltaModel, not {opt.get('model_type')}")
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=num_gpu, auto_resume=False)
    train = opt['datasets']['train']
    train.update(phase='train', scale=opt['scale'])
    if batch_size:
        train['batch_size_per_gpu'] = batch_size
    if gt_size:
        train['gt_size'] = gt_size
    return opt


def on_the_fly_dataset_options(cached_opt):
    """PairedImageDataset options over the same LR/HR images as a PairedCachedBaseDataset option."""
    keep = ('name', 'dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'io_backend', 'gt_size', 'use_hflip',
            'use_rot', 'phase', 'scale', 'batch_size_per_gpu')
    return dict({k: cached_opt[k] for k in keep if k in cached_opt}, type='PairedImageDataset')


def check_inputs(opt):
    """FileNotFoundError naming the script that makes whatever the benchmark lacks."""
    train = opt['datasets']['train']
    needs = [(train['dataroot_gt'], 'scripts/prepare_training_data.py'),
             (train['dataroot_lq'], 'scripts/prepare_training_data.py'),
             (train['dataroot_base'], 'scripts/cache_backbone_outputs.py'),
             (opt['network_g']['backbone_weights'], 'scripts/fetch_weights.py')]
    for path, maker in needs:
        if not os.path.exists(path):
            raise FileNotFoundError(f'{path} is missing; make it with {maker} (see the option file header)')


def endless_batches(dataset, batch_size, seed):
    """Shuffled batches of ``dataset`` forever (num_workers 0, as the option files train)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0,
                              generator=generator)


def fill_memory_cache(dataset):
    """Read every item once so that a ``cache_in_memory`` dataset holds all decoded images; returns seconds."""
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - start


class Variant:
    """One model with its data stream; ``step()`` runs and times one training iteration."""

    def __init__(self, name, opt, dataset_opt, seed):
        torch.manual_seed(seed)  # the same refiner initialisation for every variant
        self.name = name
        self.dataset = build_dataset(dataset_opt)
        self.model = build_model(opt)
        self.batches = endless_batches(self.dataset, dataset_opt['batch_size_per_gpu'], seed)
        self.cuda = self.model.device.type == 'cuda'
        self.data_s, self.step_s = [], []

    def step(self, current_iter, record):
        """One iteration; appends (data seconds, step seconds) when ``record``."""
        t0 = time.perf_counter()
        batch = next(self.batches)
        t1 = time.perf_counter()
        self.model.feed_data(batch)
        self.model.optimize_parameters(current_iter)
        if self.cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if record:
            self.data_s.append(t1 - t0)
            self.step_s.append(t2 - t1)


def format_table(variants):
    """Markdown table of mean seconds per iteration (data, step, total), median total and speedup."""
    base_total = statistics.mean(map(sum, zip(variants[0].data_s, variants[0].step_s)))
    rows = []
    for v in variants:
        totals = [d + s for d, s in zip(v.data_s, v.step_s)]
        mean_total = statistics.mean(totals)
        rows.append([v.name, f'{statistics.mean(v.data_s):.4f}', f'{statistics.mean(v.step_s):.4f}', f'{mean_total:.4f}',
                     f'{statistics.median(totals):.4f}', f'{base_total / mean_total:.2f}x'])
    return markdown_table(['data path', 'data s/it', 'step s/it', 'total s/it', 'median total', 'speedup'], rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', help=f'cached-base BackboneDelta train options (default {DEFAULT_OPT}); time '
                   'another refiner with its option file, e.g. options/train/train_CFSRDelta_RefineNet_x4_cached.yml')
    p.add_argument('--batch', type=int, help="batch size (default: the option file's, 32)")
    p.add_argument('--gt-size', type=int, help="HR patch size (default: the option file's, 96)")
    p.add_argument('--warmup', type=int, default=3, help='untimed iterations per variant (default 3)')
    p.add_argument('--iters', type=int, default=20, help='timed iterations per variant (default 20)')
    p.add_argument('--threads', type=int, help='torch CPU threads (default: torch decides)')
    p.add_argument('--num-gpu', type=int, default=0, help='0: CPU (default); 1: the first GPU')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        sys.exit('error: need --iters >= 1 and --warmup >= 0')
    args.opt = os.path.abspath(args.opt) if args.opt else os.path.join(ROOT, DEFAULT_OPT)
    os.chdir(ROOT)  # option files use repository-relative paths
    if args.threads:
        torch.set_num_threads(args.threads)
    get_root_logger(log_level=logging.WARNING)  # keep BasicSR's build messages out of the table
    try:
        opt = load_train_options(args.opt, args.batch, args.gt_size, args.num_gpu)
        check_inputs(opt)
        cached_opt = dict(opt['datasets']['train'], cache_in_memory=True)
        variants = [Variant('on the fly (PairedImageDataset)', opt, on_the_fly_dataset_options(cached_opt), args.seed),
                    Variant('cached (PairedCachedBaseDataset, in memory)', opt, cached_opt, args.seed)]
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f'error: {err}')
    train = opt['datasets']['train']
    print(f"x{opt['scale']} {opt['network_g']['refiner']['type']}, batch {train['batch_size_per_gpu']}, "
          f"gt_size {train['gt_size']}, {len(variants[0].dataset)} training images, "
          f'{torch.get_num_threads()} threads, device {variants[0].model.device}')
    print(f'filling the in-memory cache: {fill_memory_cache(variants[1].dataset):.1f} s')
    total = args.warmup + args.iters
    for it in range(1, total + 1):
        for v in variants:
            v.step(it, record=it > args.warmup)
        print(f'\r[{it}/{total}]' + (' warm-up' if it <= args.warmup else ' ' * 8), end='', flush=True)
    print()
    print(format_table(variants))


if __name__ == '__main__':
    main()
