"""PairedCachedBaseDataset: LR/HR pairs plus the frozen backbone's cached SR output (SR_base)."""
import os

import cv2
import numpy as np
from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data


def decode_base(buf):
    """Decode a cached SR_base (16-bit PNG bytes) to float32 BGR (H, W, 3) in [0, 1]."""
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16:
        raise ValueError('cached SR_base must be a 16-bit PNG (made by scripts/cache_backbone_outputs.py)')
    return img.astype(np.float32) / 65535.0


def encode_base(img):
    """Encode a float BGR (H, W, 3) image in [0, 1] as 16-bit PNG bytes (quantisation step 1.5e-5)."""
    ok, buf = cv2.imencode('.png', np.clip(np.round(img * 65535.0), 0, 65535).astype(np.uint16))
    if not ok:
        raise RuntimeError('PNG encoding failed')
    return buf.tobytes()


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
            self.paths = paired_paths_from_lmdb([self.lq_folder, self.gt_folder], ['lq', 'gt'])
            paired_paths_from_lmdb([self.base_folder, self.gt_folder], ['base', 'gt'])  # same keys, or ValueError
            for p in self.paths:
                p['base_path'] = p['gt_path']
        else:
            tmpl = opt.get('filename_tmpl', '{}')
            self.paths = paired_paths_from_folder([self.lq_folder, self.gt_folder], ['lq', 'gt'], tmpl)
            for p in self.paths:
                p['base_path'] = os.path.join(self.base_folder, os.path.basename(p['gt_path']))
                if not os.path.isfile(p['base_path']):
                    raise FileNotFoundError(f"no cached SR_base for {p['gt_path']}: expected {p['base_path']}; "
                                            'run scripts/cache_backbone_outputs.py')

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
        img_base = decode_base(self.file_client.get(paths['base_path'], 'base'))
        if img_base.shape[:2] != (img_lq.shape[0] * scale, img_lq.shape[1] * scale):
            raise ValueError(f"cached SR_base {paths['base_path']} has size {img_base.shape[:2]}, expected "
                             f'{img_lq.shape[0] * scale}x{img_lq.shape[1] * scale}: stale cache or wrong scale')
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
