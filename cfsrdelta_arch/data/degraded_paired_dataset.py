"""DegradedPairedDataset: BasicSR's PairedImageDataset on a degraded LR folder, plus the folder's kernel
and noise level for non-blind models (USRNet)."""
import numpy as np
import torch
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from cfsrdelta_arch.data.degradations import read_degradation
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError, checked_pairs


@DATASET_REGISTRY.register()
class DegradedPairedDataset(PairedImageDataset):
    """PairedImageDataset on a folder made by scripts/make_degraded_lr.py (``dataroot_lq``), for any model.

    BasicSR's PairedImageDataset cannot read such a folder: it pairs every file, and the folder also
    holds ``kernel.npy`` and ``degradation.json``. This one pairs the images only (names and sizes
    checked, :func:`checked_pairs`) and adds to every sample 'kernel' (kh, kw) float32 and
    'noise_sigma' (float32 scalar tensor, σ_n on the 0-255 scale) and 'degradation' (the setting,
    'gaussian8' or 'classical'), the keys DegradedOnTheFlyDataset returns; blind models ignore them. LR files carry the HR stems (``filename_tmpl: '{}'``, the
    default). Outside training the HR is cropped to s x the LR size, which is the protocol's mod-crop.
    Disk folders only.
    """

    def __init__(self, opt):
        data.Dataset.__init__(self)  # PairedImageDataset.__init__ would pair kernel.npy and degradation.json
        if opt['io_backend']['type'] != 'disk':
            raise DatasetError(f"{opt['name']}: DegradedPairedDataset reads folders (io_backend type disk)")
        try:
            kernel, record = read_degradation(opt['dataroot_lq'])
        except FileNotFoundError as err:
            raise DatasetError(str(err)) from None
        if record['scale'] != opt['scale']:
            raise DatasetError(f"{opt['dataroot_lq']} was made for x{record['scale']} but scale is {opt['scale']}")
        # What PairedImageDataset.__getitem__ reads.
        self.opt, self.file_client, self.io_backend_opt = opt, None, dict(opt['io_backend'])
        self.mean, self.std = opt.get('mean'), opt.get('std')
        self.gt_folder, self.lq_folder = opt['dataroot_gt'], opt['dataroot_lq']
        self.filename_tmpl = opt.get('filename_tmpl', '{}')
        self.paths = checked_pairs(opt, images_only=True)
        self.kernel = torch.from_numpy(kernel.astype(np.float32))
        self.noise_sigma = torch.tensor(float(record['noise_sigma']), dtype=torch.float32)
        self.degradation = record['setting']

    def __getitem__(self, index):
        return dict(super().__getitem__(index), kernel=self.kernel, noise_sigma=self.noise_sigma,
                    degradation=self.degradation)
