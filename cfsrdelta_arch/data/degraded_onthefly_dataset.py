"""DegradedOnTheFlyDataset: HR patches degraded on the fly with a random kernel and noise level, for
training non-blind (kernel- and noise-conditioned) and blind models."""
import numpy as np
import torch
from basicsr.data.data_util import paths_from_lmdb
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.data.degradations import bivariate_Gaussian
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from cfsrdelta_arch.data.degradations import add_noise, blur_downsample, check_setting, quantise
from cfsrdelta_arch.data.lr_generation import list_images
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError, lmdb_image_sizes
from cfsrdelta_arch.utils.image_io import image_size

KERNEL_TYPES = ('iso', 'aniso', 'motion', 'delta')


def motion_kernel(size, length, angle):
    """Linear motion blur (neither BasicSR nor scipy has one): a segment of ``length`` pixels through
    the kernel centre at ``angle`` (radians), drawn by bilinear splatting of 4 points per pixel.

    A straight path is a simplification of the curved camera-shake trajectories of USRNet's k9-k12.

    Args:
        size (int): odd kernel size; ``length`` must be at most ``size - 1``.

    Returns:
        np.ndarray: float64 (size, size), sums to 1.
    """
    t = np.linspace(-length / 2, length / 2, int(4 * length) + 1)
    y, x = (size - 1) / 2 + t * np.sin(angle), (size - 1) / 2 + t * np.cos(angle)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    wy, wx = y - y0, x - x0
    kernel = np.zeros((size, size))
    for dy, dx, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        # a neighbour past the last row/column only ever gets weight 0 (the point is on that row/column)
        np.add.at(kernel, (np.minimum(y0 + dy, size - 1), np.minimum(x0 + dx, size - 1)), w)
    return kernel / kernel.sum()


def random_kernel(rng, size, kernel_list, kernel_prob, sigma_range, motion_length_range):
    """One random blur kernel, float64 (size, size) summing to 1, drawn from ``rng`` only.

    Gaussians come from BasicSR's ``bivariate_Gaussian`` (its own random helpers draw from the global
    generators, which would make the data depend on the worker count).

    Args:
        rng (np.random.Generator): the sample's kernel generator.
        size (int): odd kernel size.
        kernel_list (list[str]): types among :data:`KERNEL_TYPES`: 'iso' (σ from ``sigma_range``),
            'aniso' (σx, σy from ``sigma_range``, rotation uniform in [0, π)), 'motion' (length from
            ``motion_length_range``, angle uniform in [0, π)), 'delta' (no blur: with the gaussian8
            model the sample is the plain bicubic case).
        kernel_prob (list[float]): their probabilities (normalised here).
    """
    kind = kernel_list[rng.choice(len(kernel_list), p=np.asarray(kernel_prob, float) / np.sum(kernel_prob))]
    if kind == 'iso':
        sigma = rng.uniform(*sigma_range)
        return bivariate_Gaussian(size, sigma, sigma, 0, isotropic=True)
    if kind == 'aniso':
        sx, sy, theta = rng.uniform(*sigma_range), rng.uniform(*sigma_range), rng.uniform(0, np.pi)
        return bivariate_Gaussian(size, sx, sy, theta, isotropic=False)
    if kind == 'motion':
        return motion_kernel(size, rng.uniform(*motion_length_range), rng.uniform(0, np.pi))
    kernel = np.zeros((size, size))
    kernel[size // 2, size // 2] = 1.0
    return kernel


def sample_generators(seed, index):
    """(crop, kernel, noise, model) numpy generators of sample ``index``: independent streams of
    ``SeedSequence([seed, index])``, so a sample never depends on the worker that loads it or on the
    samples loaded before it, and changing one option (e.g. the kernel types) leaves the others' draws.

    The noise generator draws σ_n first (uniform in ``noise_range``), then the (h, w, 3) noise array;
    the model generator picks the degradation model when several are given.
    """
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(4))


@DATASET_REGISTRY.register()
class DegradedOnTheFlyDataset(data.Dataset):
    """HR images -> random HR patch -> random kernel, degradation model, noise -> (LR, HR) pair.

    Sample ``index`` shows image ``index % n_images`` and is a pure function of (``seed``, ``index``)
    (:func:`sample_generators`): the same for any worker count, in a resumed run and across epochs.
    The dataset is ``repeat`` x the images long; make an epoch cover the run (``repeat`` >=
    total_iter x batch size / n_images) so that no degraded patch is seen twice. BasicSR's
    ``dataset_enlarge_ratio`` would repeat indices (its sampler takes them modulo the length) and is
    refused: use ``repeat``.

    Options (beyond ``name``, ``type``, ``phase`` and BasicSR's loader keys):
        dataroot_gt (str): HR folder, or an LMDB folder with ``io_backend: {type: lmdb}``.
        io_backend (dict): ``{type: disk}`` or ``{type: lmdb}``.
        scale (int): set by BasicSR from the top-level ``scale``.
        gt_size (int): HR patch size, a multiple of ``scale``.
        degradation (str | list[str]): 'classical' (circular blur, ``[0::s, 0::s]``; default) or
            'gaussian8' (reflect blur, MATLAB bicubic), as in docs/degradation_protocol.md; a list
            draws one of them per sample, uniformly.
        kernel_size (int): odd size of every returned kernel (default 25, the size of USRNet's kernels).
        kernel_list, kernel_prob: see :func:`random_kernel` (default all four, [0.3, 0.3, 0.3, 0.1]).
        sigma_range (list[float]): Gaussian widths in HR pixels (default [0.6, 4.0]; scale it with ``scale``).
        motion_length_range (list[float]): motion lengths in HR pixels (default [5, 20], <= kernel_size - 1).
        noise_range (list[float]): σ_n on the 0-255 scale, uniform (default [0, 25]; [0, 0]: no noise).
        quantise (bool): round the LR to 8 bits like the test sets (default true).
        use_hflip, use_rot (bool): flips / transposes of the HR patch before it is degraded (default false).
        repeat (int): samples per image and epoch (default 1).
        seed (int): data seed (default 0).

    Returns (per sample):
        dict: 'lq' (3, gt_size/s, gt_size/s) and 'gt' (3, gt_size, gt_size) float32 RGB in [0, 1];
        'kernel' (kernel_size, kernel_size) float32, sums to 1; 'noise_sigma' float32 scalar tensor,
        σ_n on the 0-255 scale; 'degradation': the sample's degradation model; 'lq_path', 'gt_path': the HR file (or LMDB key).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.scale, self.gt_size = int(opt['scale']), int(opt['gt_size'])
        models = opt.get('degradation', 'classical')
        self.models = [models] if isinstance(models, str) else list(models)
        self.kernel_size = int(opt.get('kernel_size', 25))
        self.kernel_list = list(opt.get('kernel_list', KERNEL_TYPES))
        self.kernel_prob = list(opt.get('kernel_prob', [0.3, 0.3, 0.3, 0.1]))
        self.sigma_range = tuple(opt.get('sigma_range', (0.6, 4.0)))
        self.motion_length_range = tuple(opt.get('motion_length_range', (5, 20)))
        self.noise_range = tuple(opt.get('noise_range', (0, 25)))
        self.quantise = bool(opt.get('quantise', True))
        self.repeat, self.seed = int(opt.get('repeat', 1)), int(opt.get('seed', 0))
        self.io_opt = dict(opt['io_backend'])
        self._check_options()
        root = opt['dataroot_gt']
        if self.io_opt['type'] == 'lmdb':
            self.io_opt.update(db_paths=[root], client_keys=['gt'])
            self.paths = paths_from_lmdb(root)
            sizes = lmdb_image_sizes(root)
            small = [p for p in self.paths if min(sizes[p]) < self.gt_size]
        else:
            self.paths = list_images(root)
            small = [p for p in self.paths if min(image_size(p)) < self.gt_size]
        if small:
            raise DatasetError(f'{small[0]} is smaller than gt_size {self.gt_size} (and {len(small) - 1} more); '
                               'lower gt_size or remove them')
        self.file_client = None

    def _check_options(self):
        """One-line DatasetError for options that would fail (or silently mislead) later."""
        try:
            if not self.models:
                raise ValueError('no degradation model given')
            for model in self.models:
                check_setting(model)
        except ValueError as err:
            raise DatasetError(f'degradation: {err}') from None
        problems = [
            (self.gt_size % self.scale != 0, f'gt_size {self.gt_size} is not a multiple of the scale {self.scale}'),
            (self.kernel_size % 2 == 0, f'kernel_size {self.kernel_size} must be odd'),
            (not set(self.kernel_list) <= set(KERNEL_TYPES),
             f"kernel_list {self.kernel_list}: known types are {', '.join(KERNEL_TYPES)}"),
            (len(self.kernel_prob) != len(self.kernel_list) or min(self.kernel_prob) < 0 or sum(self.kernel_prob) <= 0,
             'kernel_prob must give one non-negative probability per kernel_list entry'),
            ('motion' in self.kernel_list and self.motion_length_range[1] > self.kernel_size - 1,
             f'motion_length_range {list(self.motion_length_range)} exceeds kernel_size - 1'),
            (min(self.noise_range) < 0 or self.noise_range[0] > self.noise_range[1], 'noise_range must be [lo, hi], 0 <= lo <= hi'),
            (self.opt.get('dataset_enlarge_ratio', 1) != 1,
             'dataset_enlarge_ratio repeats sample indices (identical samples); use repeat instead'),
        ]
        for bad, message in problems:
            if bad:
                raise DatasetError(f"{self.opt.get('name', 'DegradedOnTheFlyDataset')}: {message}")

    def __len__(self):
        return len(self.paths) * self.repeat

    def read_hr(self, path):
        """uint8 BGR (H, W, 3) HR image (grayscale replicated)."""
        if self.file_client is None:  # created in the worker process (an LMDB handle cannot be pickled)
            self.file_client = FileClient(self.io_opt.pop('type'), **self.io_opt)
        return imfrombytes(self.file_client.get(path, 'gt'), float32=False)

    def __getitem__(self, index):
        path = self.paths[index % len(self.paths)]
        crop_rng, kernel_rng, noise_rng, model_rng = sample_generators(self.seed, index)
        model = self.models[int(model_rng.integers(len(self.models)))] if len(self.models) > 1 else self.models[0]
        hr = self.read_hr(path)
        top = int(crop_rng.integers(0, hr.shape[0] - self.gt_size + 1))
        left = int(crop_rng.integers(0, hr.shape[1] - self.gt_size + 1))
        hr = hr[top:top + self.gt_size, left:left + self.gt_size]
        if self.opt.get('use_hflip', False) and crop_rng.random() < 0.5:
            hr = hr[:, ::-1]
        if self.opt.get('use_rot', False):
            if crop_rng.random() < 0.5:
                hr = hr[::-1]
            if crop_rng.random() < 0.5:
                hr = hr.transpose(1, 0, 2)
        hr = np.ascontiguousarray(hr).astype(np.float64) / 255.0
        kernel = random_kernel(kernel_rng, self.kernel_size, self.kernel_list, self.kernel_prob, self.sigma_range,
                               self.motion_length_range)
        noise_sigma = float(noise_rng.uniform(*self.noise_range))
        lr = add_noise(blur_downsample(hr, kernel, self.scale, model), noise_sigma, noise_rng)
        lr = quantise(lr).astype(np.float64) / 255.0 if self.quantise else np.clip(lr, 0, 1)
        lq, gt = img2tensor([lr.astype(np.float32), hr.astype(np.float32)], bgr2rgb=True, float32=True)
        return {'lq': lq, 'gt': gt, 'kernel': torch.from_numpy(kernel.astype(np.float32)),
                'noise_sigma': torch.tensor(noise_sigma, dtype=torch.float32), 'degradation': model,
                'lq_path': path, 'gt_path': path}
