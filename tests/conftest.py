"""Shared fixtures and helpers: tiny networks and images, scripts run as a user runs them.

Tests needing ../shared skip locally with a reason, but fail when CI is set.
"""
import os

import forked_python
import numpy as np
import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
SHARED = os.path.abspath(os.path.join(ROOT, os.pardir, 'shared'))

import cfsrdelta_arch  # noqa: F401  (registers everything; must precede basicsr imports)
from cfsrdelta_arch.utils.weights import NO_DOWNLOAD_ENV, CheckpointError

# Tests never reach the network: a missing official file is an error here, not a download (subprocesses
# inherit this; tests/test_weights_download.py turns downloads on against a local server).
os.environ[NO_DOWNLOAD_ENV] = '1'

# A CFSR x2 small enough for tests on the CPU (8 channels, one block; dw_size 9, mlp_ratio 2 by default).
TINY_CFSR = {'type': 'CFSR', 'upscale': 2, 'embed_dim': 8, 'depths': [1]}


def require_shared(*relative):
    """Absolute path inside ../shared; skip (locally) or fail (CI) when it is missing."""
    path = os.path.join(SHARED, *relative)
    if not os.path.exists(path):
        msg = f'{path} is missing: tests that use the upstream weights/datasets need ../shared beside the checkout'
        if os.environ.get('CI'):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def official_weights(name):
    """Path of an upstream checkpoint, e.g. official_weights('CFSR_x4.pth')."""
    return require_shared('weights', 'official', name)


def smooth_image(h, w, channels=3, seed=0, cell=4):
    """A smooth random uint8 image (h, w, channels), like a natural image at low resolution: random
    values on a grid of ``cell`` pixels, bicubically interpolated. ``seed``: int or numpy Generator."""
    import cv2
    small = np.random.default_rng(seed).integers(0, 256, (max(h // cell, 2), max(w // cell, 2), channels), np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return img if img.ndim == 3 else img[..., None]


def coordinate_image(h, w):
    """uint8 (h, w, 3) image whose pixels encode their position, so any misalignment shows."""
    y, x = np.mgrid[:h, :w]
    return np.stack([y % 256, x % 256, (3 * y + 5 * x) % 256], axis=-1).astype(np.uint8)


def write_png(path, img):
    """Write ``img`` with OpenCV (folders created); returns ``path``."""
    import cv2
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)
    return path


def write_garbage(path):
    """A file with an image extension that is no image."""
    with open(path, 'wb') as f:
        f.write(b'this is not an image')
    return path


def random_lr_sr(scale, seed, size=(10, 7)):
    """(lr (1, 3, H, W), sr (1, 3, s*H, s*W)), uniform in [0, 1], after ``torch.manual_seed(seed)``
    (so what is built next is seeded too); the default size is odd and non-square, to catch H/W
    mix-ups and scale rounding."""
    torch.manual_seed(seed)
    h, w = size
    return torch.rand(1, 3, h, w), torch.rand(1, 3, h * scale, w * scale)


def clone_state(module):
    """Detached copies of a module's state dict tensors."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def write_tiny_model(folder, network=None, scale=2, seed=0):
    """A random tiny CFSR (or ``network``) as (option file, checkpoint) in ``folder``.

    The option file has ``network_g`` and ``scale`` only; the checkpoint is passed with --weights.
    """
    import yaml
    from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
    network = network or TINY_CFSR
    torch.manual_seed(seed)
    net = build_from_options(network)
    for p in net.parameters():  # make every block matter (layer scales start at 1e-6)
        p.data.add_(torch.randn_like(p) * 0.05)
    pth = os.path.join(folder, 'tiny.pth')
    torch.save({'params': net.state_dict()}, pth)
    opt = os.path.join(folder, 'tiny.yml')
    with open(opt, 'w') as f:
        yaml.safe_dump({'scale': scale, 'network_g': network}, f)
    return opt, pth


def checkout_env():
    """Environment for a subprocess that imports this checkout's package (the repository root is
    prepended to PYTHONPATH)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))


def run_script(name, *args, cwd=None):
    """Run ``python scripts/<name>.py <args>`` as a user would (this checkout importable), in a process
    forked from a server that imported the package (tests/forked_python.py); returns the
    CompletedProcess with text stdout/stderr."""
    return forked_python.run([os.path.join(ROOT, 'scripts', f'{name}.py'), *args], cwd or ROOT, checkout_env())


def read_tree(folder):
    """{path relative to ``folder``: file bytes} of every file below it (hidden ones included)."""
    tree = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                tree[os.path.relpath(path, folder)] = f.read()
    return tree


def cache_options(base_dir, hr_dir, lr_dir, weights, backbone=None, pad_multiple=1):
    """Train options of a BackboneDelta x2 (``backbone``: TINY_CFSR by default, weights from
    ``weights``) with one PairedCachedBaseDataset whose SR_base cache is ``base_dir``."""
    backbone = backbone or TINY_CFSR
    return {
        'scale': backbone['upscale'],
        'datasets': {'train': {'name': 'tiny', 'type': 'PairedCachedBaseDataset', 'dataroot_gt': str(hr_dir),
                               'dataroot_lq': str(lr_dir), 'dataroot_base': str(base_dir),
                               'filename_tmpl': f"{{}}x{backbone['upscale']}", 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'BackboneDelta', 'backbone': backbone, 'refiner': {'type': 'RefineNet'},
                      'backbone_weights': str(weights), 'backbone_pad_multiple': pad_multiple},
    }


def assert_cache_matches(opt, names):
    """Each named file of the SR_base cache of ``opt['datasets']['train']`` is a complete 16-bit PNG
    holding what the delta model computes on the fly, ``BackboneDelta(network_g).forward_backbone(LR)``
    on the whole LR, to within half a 16-bit level."""
    import cv2
    from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
    from cfsrdelta_arch.data.lr_generation import read_image_color
    from cfsrdelta_arch.utils.image_io import image_to_tensor
    d = opt['datasets']['train']
    net = build_from_options(opt['network_g'])
    for name in names:
        lr_name = d['filename_tmpl'].format(os.path.splitext(name)[0]) + '.png'
        expected = net.forward_backbone(image_to_tensor(read_image_color(os.path.join(d['dataroot_lq'], lr_name)),
                                                        bgr=True))
        img = cv2.imread(os.path.join(d['dataroot_base'], name), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.dtype == np.uint16, f'{name} is not a complete 16-bit PNG'
        assert (image_to_tensor(img, bgr=True) - expected).abs().max().item() <= 0.5 / 65535 + 1e-6, name


def write_tiny_dataset(root, scale, n=3, size=48, seed=0):
    """Smooth random HR images (size x size) with protocol LR, in the EDSR layout under ``root``.

    Returns (hr_dir, lr_dir); LR files are named '<name>x<scale>.png'.
    """
    import cv2
    from cfsrdelta_arch.data.lr_generation import bicubic_downsample
    rng = np.random.default_rng(seed)
    hr_dir = os.path.join(root, 'HR')
    lr_dir = os.path.join(root, 'LR_bicubic', f'X{scale}')
    os.makedirs(hr_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    for i in range(n):
        hr = smooth_image(size, size, seed=rng, cell=8)
        cv2.imwrite(os.path.join(hr_dir, f'img{i}.png'), hr)
        cv2.imwrite(os.path.join(lr_dir, f'img{i}x{scale}.png'), bicubic_downsample(hr, scale))
    return hr_dir, lr_dir


@pytest.fixture
def tiny_dataset(tmp_path):
    """Factory: ``tiny_dataset(scale, n=3, size=48)`` -> (hr_dir, lr_dir) under a temp folder."""
    def make(scale, n=3, size=48):
        return write_tiny_dataset(str(tmp_path / f'tiny_x{scale}'), scale, n, size)
    return make


def encode_base(img):
    """A cached SR_base file's bytes (16-bit PNG, as scripts/cache_backbone_outputs.py writes) of a
    float BGR (H, W, 3) image in [0, 1]."""
    import cv2
    from cfsrdelta_arch.utils.image_io import from_float
    ok, buf = cv2.imencode('.png', from_float(img, np.uint16))
    assert ok
    return buf.tobytes()


def checkpoint_error_line(fn):
    """The message of the CheckpointError that ``fn()`` raises, checked to be one non-empty line."""
    with pytest.raises(CheckpointError) as info:
        fn()
    msg = str(info.value)
    assert msg and '\n' not in msg
    return msg
