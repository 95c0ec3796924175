"""Compute the frozen backbone's SR output (SR_base) once for every LR image of a delta training run.

Reads a train option file and, for every dataset of type PairedCachedBaseDataset (train and val),
writes ``<dataroot_base>/<GT file name>``: the output of the BackboneDelta of ``network_g`` (its
``backbone_weights``, ``backbone_pad_multiple`` and clamp) for the whole LR image (tiled for large
ones) as a 16-bit PNG, so training sees exactly what the backbone gives at test time.

A re-run completes the cache: files whose LR image is unchanged are kept, the others recomputed,
files of images that left the dataset removed (cache_info.json records the backbone and the LR
each file came from; every file is written atomically, so an interrupted run can be resumed). A
cache of other backbone weights or options is refused unless --overwrite is given, which rebuilds
the folder from scratch and puts it in place at the end. dataroot_base may not be, lie inside or
contain dataroot_gt or dataroot_lq.

Example:
  python scripts/cache_backbone_outputs.py -opt options/train/train_CFSRDelta_LRRefineNet_x4.yml
"""
import argparse
import sys

from tqdm import tqdm

from cfsrdelta_arch.data.backbone_cache import cache_backbone_outputs
from cfsrdelta_arch.utils.fileio import load_yaml


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', required=True, help='train option file using PairedCachedBaseDataset')
    p.add_argument('--tile', type=int, default=256, help='LR tile size for large images (default 256; 0: whole)')
    p.add_argument('--overwrite', action='store_true', help='rebuild existing cache folders from scratch')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        reports = cache_backbone_outputs(load_yaml(args.opt), args.tile or None, args.overwrite, tqdm)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    for r in reports:
        print(f'{r.key}: {r.computed} computed, {r.kept} already cached, {r.removed} stale files removed -> {r.folder}')


if __name__ == '__main__':
    main()
