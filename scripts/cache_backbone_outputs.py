"""Compute the frozen backbone's SR output (SR_base) once for every LR image of a delta training run.

Reads a train option file, builds the backbone of ``network_g`` with the weights in
``network_g.backbone_weights``, and for every dataset of type PairedCachedBaseDataset (train and
val) writes ``<dataroot_base>/<GT file name>`` as a 16-bit PNG, from the whole LR image (tiled for
large ones), so training sees exactly what the backbone gives at test time.

Existing files are kept (the run can be interrupted and resumed); a cache made with other backbone
weights or options is refused unless --overwrite is given (cache_info.json records them).

Example:
  python scripts/cache_backbone_outputs.py -opt options/train/train_CFSRDelta_LRRefineNet_x4.yml
"""
import argparse
import json
import os
import sys


import cfsrdelta_arch  # noqa: F401  (registers archs; installs the basicsr compat shim)
import torch
import yaml
from basicsr.data.data_util import paired_paths_from_folder

from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
from cfsrdelta_arch.data.paired_cached_base_dataset import encode_base
from cfsrdelta_arch.utils.image_io import image_to_tensor
from cfsrdelta_arch.utils.inference import super_resolve
from cfsrdelta_arch.data.lr_generation import read_image_color
from cfsrdelta_arch.utils.weights import load_weights, sha256_of


def cached_datasets(opt):
    """The dataset options of type PairedCachedBaseDataset in a train option dict."""
    return [d for d in opt['datasets'].values() if d.get('type') == 'PairedCachedBaseDataset']


def cache_signature(opt):
    """What the cache depends on: backbone options, the sha256 of its weights (and its input padding)."""
    weights = opt['network_g'].get('backbone_weights')
    if not weights:
        raise ValueError('network_g.backbone_weights is not set: nothing to cache')
    signature = {'backbone': opt['network_g']['backbone'], 'weights_sha256': sha256_of(weights), 'scale': opt['scale']}
    pad_multiple = opt['network_g'].get('backbone_pad_multiple', 1)
    if pad_multiple != 1:  # recorded only when used, so caches made before the option stay valid
        signature['backbone_pad_multiple'] = pad_multiple
    return signature


def check_signature(folder, signature, overwrite):
    """Refuse to mix outputs of different backbones in one cache folder."""
    info_path = os.path.join(folder, 'cache_info.json')
    if os.path.isfile(info_path) and not overwrite:
        with open(info_path) as f:
            old = json.load(f)
        if old != json.loads(json.dumps(signature)):
            raise ValueError(f'{folder} holds outputs of another backbone ({info_path}); use --overwrite '
                             'or another dataroot_base')
    os.makedirs(folder, exist_ok=True)
    with open(info_path, 'w') as f:
        json.dump(signature, f, indent=2)


def lr_to_tensor(path):
    """LR file -> float RGB (1, 3, H, W) in [0, 1], read as the protocol reads it (gray -> 3 channels)."""
    return image_to_tensor(read_image_color(path), bgr=True)


def cache_dataset(backbone, dataset_opt, scale, tile, overwrite, pad_multiple=1):
    """Write SR_base for every LR/GT pair of one dataset option; returns (written, kept).

    ``pad_multiple``: ``network_g.backbone_pad_multiple`` (see BackboneDelta), for backbones that only
    accept LR sizes divisible by it.
    """
    tmpl = dataset_opt.get('filename_tmpl', '{}')
    pairs = paired_paths_from_folder([dataset_opt['dataroot_lq'], dataset_opt['dataroot_gt']], ['lq', 'gt'], tmpl)
    out_dir = dataset_opt['dataroot_base']
    written = kept = 0
    for i, pair in enumerate(pairs):
        out = os.path.join(out_dir, os.path.basename(pair['gt_path']))
        if os.path.isfile(out) and not overwrite:
            kept += 1
        else:
            with torch.no_grad():
                sr = super_resolve(backbone, lr_to_tensor(pair['lq_path']), scale, tile_size=tile,
                                   pad_multiple=pad_multiple)
            bgr = sr[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1]
            with open(out + '.part', 'wb') as f:
                f.write(encode_base(bgr))
            os.replace(out + '.part', out)
            written += 1
        print(f"\r[{dataset_opt['name']}] {i + 1}/{len(pairs)}", end='', flush=True)
    print()
    return written, kept


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', required=True, help='train option file using PairedCachedBaseDataset')
    p.add_argument('--tile', type=int, default=256, help='LR tile size for large images (default 256; 0: whole)')
    p.add_argument('--overwrite', action='store_true', help='recompute existing files / replace another cache')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with open(args.opt) as f:
        opt = yaml.safe_load(f)
    datasets = cached_datasets(opt)
    if not datasets:
        sys.exit(f'error: {args.opt} has no PairedCachedBaseDataset dataset')
    try:
        signature = cache_signature(opt)
        backbone = build_from_options(opt['network_g']['backbone'])
        load_weights(backbone, opt['network_g']['backbone_weights'], opt['network_g'].get('backbone_param_key',
                                                                                           'params'))
        backbone.eval()
        for d in datasets:
            check_signature(d['dataroot_base'], signature, args.overwrite)
            written, kept = cache_dataset(backbone, d, opt['scale'], args.tile or None, args.overwrite,
                                          opt['network_g'].get('backbone_pad_multiple', 1))
            print(f"{d['name']}: {written} computed, {kept} already cached -> {d['dataroot_base']}")
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
