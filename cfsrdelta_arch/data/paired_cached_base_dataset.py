"""PairedCachedBaseDataset: LR/HR pairs plus the frozen backbone's cached SR output (SR_base).

Also the pair check it shares with the option-file checks for BasicSR's PairedImageDataset
(:func:`checked_pairs`): names and sizes are compared from image headers or LMDB meta_info before
any image is decoded, so a wrong LR folder is one line instead of a silently cropped GT.
"""
import os
import re

import cv2
import numpy as np
from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, imfrombytes, img2tensor, scandir
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from cfsrdelta_arch.data.lr_generation import IMAGE_EXTENSIONS
from cfsrdelta_arch.utils.image_io import ImageReadError, image_size


class DatasetError(ValueError):
    """Dataset files that do not fit the dataset's options; the message is one line naming them."""


def lmdb_image_sizes(folder):
    """{key: (H, W)} of an LMDB folder from its meta_info.txt, whose lines BasicSR writes as
    '<key>.png (h,w,c) <compress level>' (the key is the part before the first '.', as BasicSR reads it)."""
    meta = os.path.join(folder, 'meta_info.txt')
    if not os.path.isfile(meta):
        raise DatasetError(f'{meta} is missing: {folder} is not an LMDB made by scripts/create_lmdb.py or BasicSR')
    sizes = {}
    with open(meta) as f:
        for number, line in enumerate(f, 1):
            shape = re.search(r'\((\d+),\s*(\d+)[,)]', line)
            if shape is None:
                raise DatasetError(f'{meta}:{number}: expected "<key>.png (h,w,c) <compress level>", '
                                   f'found {line.strip()!r}')
            sizes[line.split('.')[0]] = (int(shape.group(1)), int(shape.group(2)))
    return sizes


def folder_names(folder, images_only=False):
    """Sorted names of the files in ``folder`` as BasicSR lists them (all files), or of its images only."""
    return sorted(n for n in scandir(folder) if not images_only or n.lower().endswith(IMAGE_EXTENSIONS))


def unpaired_folders_message(gt_folder, lq_folder, tmpl, images_only=False):
    """Why two folders do not pair up under BasicSR's rule (LR name = ``tmpl.format(HR stem)`` + HR
    extension): the first HR without its LR or LR without an HR (``images_only``: image files only)."""
    expected = {tmpl.format(os.path.splitext(name)[0]) + os.path.splitext(name)[1]: name
                for name in folder_names(gt_folder, images_only)}
    lq_names = set(folder_names(lq_folder, images_only))
    unpaired = [f'HR {hr} has no LR {lr}' for lr, hr in expected.items() if lr not in lq_names]
    unpaired += [f'LR {lr} has no HR' for lr in sorted(lq_names - set(expected))]
    more = f' (and {len(unpaired) - 1} more)' if len(unpaired) > 1 else ''
    return (f'HR folder {gt_folder} and LR folder {lq_folder} do not pair up with filename_tmpl {tmpl!r}: '
            f'{unpaired[0]}{more}')


def paired_image_paths(lq_root, gt_root, tmpl):
    """BasicSR's ``paired_paths_from_folder`` on the image files only (a degraded LR folder also holds
    kernel.npy and degradation.json); unpaired images are a :class:`DatasetError`."""
    expected = {tmpl.format(os.path.splitext(name)[0]) + os.path.splitext(name)[1]: name
                for name in folder_names(gt_root, images_only=True)}
    if set(expected) != set(folder_names(lq_root, images_only=True)):
        raise DatasetError(unpaired_folders_message(gt_root, lq_root, tmpl, images_only=True))
    return [{'lq_path': os.path.join(lq_root, lr), 'gt_path': os.path.join(gt_root, hr)} for lr, hr in expected.items()]


def _pairs_and_sizes(opt, images_only=False):
    """(paths, size_of) of a paired dataset's options: the pairs as BasicSR lists them ('lq_path',
    'gt_path' and, with ``dataroot_base``, 'base_path'; ``images_only``: as :func:`paired_image_paths`
    lists them), and ``size_of(root, path) -> (H, W)``."""
    gt_root, lq_root, base_root = opt['dataroot_gt'], opt['dataroot_lq'], opt.get('dataroot_base')
    if opt['io_backend']['type'] == 'lmdb':
        sizes = {root: lmdb_image_sizes(root) for root in (gt_root, lq_root, base_root) if root}
        try:
            paths = paired_paths_from_lmdb([lq_root, gt_root], ['lq', 'gt'])
            if base_root:
                paired_paths_from_lmdb([base_root, gt_root], ['base', 'gt'])  # same keys, or ValueError
        except ValueError as err:
            raise DatasetError(f"{err} ({', '.join(r for r in (lq_root, gt_root, base_root) if r)})") from None
        for p in paths if base_root else ():
            p['base_path'] = p['gt_path']
        return paths, lambda root, key: sizes[root][key]

    tmpl = opt.get('filename_tmpl', '{}')
    if images_only:
        paths = paired_image_paths(lq_root, gt_root, tmpl)
    elif opt.get('meta_info_file'):  # PairedImageDataset's listed subset of the folders
        paths = paired_paths_from_meta_info_file([lq_root, gt_root], ['lq', 'gt'], opt['meta_info_file'], tmpl)
    else:
        try:
            paths = paired_paths_from_folder([lq_root, gt_root], ['lq', 'gt'], tmpl)
        except AssertionError:  # BasicSR asserts equal counts and each HR's LR name
            raise DatasetError(unpaired_folders_message(gt_root, lq_root, tmpl)) from None
    for p in paths if base_root else ():
        p['base_path'] = os.path.join(base_root, os.path.basename(p['gt_path']))
        if not os.path.isfile(p['base_path']):
            raise DatasetError(f"no cached SR_base for {p['gt_path']}: expected {p['base_path']}; "
                               'run scripts/cache_backbone_outputs.py')

    def header_size(root, path):
        try:
            return image_size(path)
        except ImageReadError as err:
            raise DatasetError(str(err)) from None
    return paths, header_size


def _wxh(size):
    return f'{size[1]}x{size[0]}'


def checked_pairs(opt, exact=False, images_only=False):
    """The pairs of a paired dataset, after checking their names and sizes.

    Reads image headers (folders) or meta_info.txt (LMDBs) only, so it runs before any work. Used by
    PairedCachedBaseDataset and, through the option-file checks, for BasicSR's PairedImageDataset,
    which crops the GT to scale x LR and would score an undersized LR against part of its HR.

    Args:
        opt (dict): dataset options: dataroot_gt, dataroot_lq, dataroot_base (optional), io_backend,
            filename_tmpl, meta_info_file (folder mode, optional), scale, phase, gt_size (training).
        exact (bool): the GT must be exactly scale x LR (PairedImageDataset's training crop needs it);
            otherwise LR = GT // scale in H and W is enough (the GT is cropped to scale x LR).
        images_only (bool): pair the image files of the folders only (:func:`paired_image_paths`).

    Returns:
        list[dict]: 'lq_path', 'gt_path' and, with dataroot_base, 'base_path': files, or LMDB keys.

    Raises:
        DatasetError: unpaired names; an LR that does not fit its HR at the scale; a training LR
            smaller than the patch; an SR_base that is not scale x LR; a missing LMDB meta_info.txt
            or cached SR_base (one line naming the files).
    """
    paths, size_of = _pairs_and_sizes(opt, images_only)
    scale = opt['scale']
    patch = opt['gt_size'] // scale if opt.get('phase') == 'train' and opt.get('gt_size') else 0
    for p in paths:
        lq, gt = size_of(opt['dataroot_lq'], p['lq_path']), size_of(opt['dataroot_gt'], p['gt_path'])
        want = (gt[0] // scale, gt[1] // scale)
        if lq != want or (exact and gt != (lq[0] * scale, lq[1] * scale)):
            rule = 'and the HR exactly scale x LR for training crops' if exact else '(HR // scale)'
            raise DatasetError(f"LR {p['lq_path']} is {_wxh(lq)} but HR {p['gt_path']} is {_wxh(gt)} (WxH): "
                               f'at x{scale} the LR must be {_wxh(want)} {rule}; remake the LR '
                               '(scripts/make_benchmark_lr.py) or fix scale')
        if min(lq) < patch:
            raise DatasetError(f"LR {p['lq_path']} is {_wxh(lq)} (WxH), smaller than the training patch "
                               f'gt_size / scale = {patch}; lower gt_size')
        if 'base_path' in p:
            base, want = size_of(opt['dataroot_base'], p['base_path']), (lq[0] * scale, lq[1] * scale)
            if base != want:
                raise DatasetError(f"cached SR_base {p['base_path']} is {_wxh(base)} (WxH), expected {_wxh(want)} "
                                   '(scale x LR): stale cache or wrong scale; rerun scripts/cache_backbone_outputs.py')
    return paths


def decode_base(buf):
    """Decode a cached SR_base (16-bit PNG bytes) to float32 BGR (H, W, 3) in [0, 1]."""
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16:
        raise ValueError('cached SR_base must be a 16-bit PNG (made by scripts/cache_backbone_outputs.py)')
    return img.astype(np.float32) / 65535.0


@DATASET_REGISTRY.register()
class PairedCachedBaseDataset(data.Dataset):
    """Paired LR/HR images with the frozen backbone's output for each LR, precomputed once.

    The refiner of CFSR-Delta trains on ``(lq, base, gt)``; reading ``base`` from disk instead of
    running the backbone every iteration is what makes delta training fast
    (scripts/bench_cache.py). Make the cache with scripts/cache_backbone_outputs.py.

    Options (as BasicSR's PairedImageDataset, plus ``dataroot_base``):
        dataroot_gt, dataroot_lq, dataroot_base (str): folders, or LMDB folders when
            ``io_backend.type`` is 'lmdb' (base files/keys are named like the GT ones).
        filename_tmpl (str): LR name template, e.g. '{}x4' (folder mode).
        gt_size (int), use_hflip (bool), use_rot (bool): training crop and augmentation.
            Flips/rotations are applied to the cached base too; the backbone is not exactly
            equivariant, so they are off by default.
        scale (int): set by BasicSR from the top-level option.
        cache_in_memory (bool): keep decoded images in RAM after the first read (about 4 MB per
            481x321 image at x4); pair it with ``num_worker_per_gpu: 0`` so the cache outlives epochs.

    Names and sizes of all pairs are checked when the dataset is built (:func:`checked_pairs`).
    Returns dicts with 'lq' (3, h, w), 'base' and 'gt' (3, s*h, s*w), RGB float32 in [0, 1], and paths.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = dict(opt['io_backend'])
        self.gt_folder, self.lq_folder = opt['dataroot_gt'], opt['dataroot_lq']
        self.base_folder = opt['dataroot_base']
        self.memory = {} if opt.get('cache_in_memory', False) else None
        if self.io_backend_opt['type'] == 'lmdb':
            self.io_backend_opt['db_paths'] = [self.lq_folder, self.gt_folder, self.base_folder]
            self.io_backend_opt['client_keys'] = ['lq', 'gt', 'base']
        self.paths = checked_pairs(opt)

    def _read(self, index):
        """Decoded (gt, base, lq) float32 BGR arrays of one pair, GT cropped to s x LR."""
        if self.memory is not None and index in self.memory:
            return self.memory[index]
        if self.file_client is None:
            opt = dict(self.io_backend_opt)
            self.file_client = FileClient(opt.pop('type'), **opt)
        scale = self.opt['scale']
        paths = self.paths[index]
        img_gt = imfrombytes(self.file_client.get(paths['gt_path'], 'gt'), float32=True)
        img_lq = imfrombytes(self.file_client.get(paths['lq_path'], 'lq'), float32=True)
        img_base = decode_base(self.file_client.get(paths['base_path'], 'base'))  # scale x LR: checked_pairs
        item = (img_gt[:img_lq.shape[0] * scale, :img_lq.shape[1] * scale], img_base, img_lq)
        if self.memory is not None:
            self.memory[index] = item
        return item

    def __getitem__(self, index):
        scale = self.opt['scale']
        paths = self.paths[index]
        img_gt, img_base, img_lq = self._read(index)
        if self.opt['phase'] == 'train':
            (img_gt, img_base), img_lq = paired_random_crop([img_gt, img_base], img_lq, self.opt['gt_size'], scale,
                                                            paths['gt_path'])
            img_gt, img_base, img_lq = augment([img_gt, img_base, img_lq], self.opt.get('use_hflip', False),
                                               self.opt.get('use_rot', False))
        img_gt, img_base, img_lq = img2tensor([img_gt, img_base, img_lq], bgr2rgb=True, float32=True)
        return {'lq': img_lq, 'gt': img_gt, 'base': img_base, 'lq_path': paths['lq_path'],
                'gt_path': paths['gt_path']}

    def __len__(self):
        return len(self.paths)
