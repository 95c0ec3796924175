"""USRNet: configurations, KAIR key names, the closed-form data step, and training/testing through
BasicSR's runners on degraded data."""
import os

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import smooth_image, write_png
from test_degradations import make_sets
from test_pipelines import exp_name, run_entries  # noqa: F401  (exp_name is a fixture)
from cfsrdelta_arch.archs.usrnet_arch import USRNet, data_terms
from cfsrdelta_arch.data.degradations import setting_kernels
from cfsrdelta_arch.utils.weights import CheckpointError

TINY = {'n_iter': 6, 'h_nc': 32, 'nc': [16, 32, 64, 64], 'nb': 2}
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def test_parameter_counts():
    assert sum(p.numel() for p in USRNet().parameters()) == 17_016_016
    assert sum(p.numel() for p in USRNet(**TINY).parameters()) == 590_332


def test_kair_key_names():
    """The names and shapes of KAIR's network_usrnet.USRNet (ResUNet built with basicblock.sequential)."""
    state = {k: tuple(v.shape) for k, v in USRNet().state_dict().items()}
    expected = {
        'p.m_head.weight': (64, 4, 3, 3),
        'p.m_down1.0.res.0.weight': (64, 64, 3, 3), 'p.m_down1.1.res.2.weight': (64, 64, 3, 3),
        'p.m_down1.2.weight': (128, 64, 2, 2), 'p.m_down3.2.weight': (512, 256, 2, 2),
        'p.m_body.1.res.2.weight': (512, 512, 3, 3),
        'p.m_up3.0.weight': (512, 256, 2, 2), 'p.m_up3.2.res.0.weight': (256, 256, 3, 3),
        'p.m_up1.0.weight': (128, 64, 2, 2), 'p.m_tail.weight': (3, 64, 3, 3),
        'h.mlp.0.weight': (64, 2, 1, 1), 'h.mlp.0.bias': (64,), 'h.mlp.2.weight': (64, 64, 1, 1),
        'h.mlp.4.weight': (16, 64, 1, 1), 'h.mlp.4.bias': (16,),
    }
    assert {k: state.get(k) for k in expected} == expected
    assert len(state) == 42 and all(k.startswith(('p.', 'h.')) for k in state)
    assert not any(k.endswith('.bias') for k in state if k.startswith('p.'))  # the prior has no biases
    tiny = USRNet(**TINY)
    tiny.load_state_dict(USRNet(**TINY).state_dict())  # strict round trip
    with pytest.raises(CheckpointError):
        tiny.load_state_dict(USRNet().state_dict())  # full weights into the tiny network: one line


def degrade_classical(x, kernel, sf):
    """Circular blur (scipy, float64) and [0::s, 0::s] decimation of (N, C, H, W)."""
    out = np.stack([[ndimage.convolve(c, kernel, mode='wrap') for c in img] for img in x.numpy()])
    return torch.from_numpy(out[..., ::sf, ::sf].copy())


@pytest.mark.parametrize('sf,kernel_index', [(4, 4), (3, 9), (2, 0)])
def test_data_step_solves_its_subproblem(sf, kernel_index):
    """z = argmin ||y - (z ⊗ k)↓s||² + α||z - x||²: α -> 0 gives an exact fit of y, α large gives x."""
    torch.manual_seed(0)
    kernel = setting_kernels('classical', sf)[kernel_index].kernel
    y = torch.rand(1, 3, 14, 13, dtype=torch.float64)
    x = torch.rand(1, 3, 14 * sf, 13 * sf, dtype=torch.float64)
    terms = data_terms(y, torch.from_numpy(kernel)[None, None], sf)
    net = USRNet(**TINY).double()
    small = net.d(x, *terms, torch.full((1, 1, 1, 1), 1e-9, dtype=torch.float64), sf)
    assert (degrade_classical(small, kernel, sf) - y).abs().max() < 1e-4
    assert (degrade_classical(x, kernel, sf) - y).abs().max() > 0.1  # (x itself does not fit y)
    large = net.d(x, *terms, torch.full((1, 1, 1, 1), 1e9, dtype=torch.float64), sf)
    assert (large - x).abs().max() < 1e-6
    # In between: the minimiser's gradient vanishes (finite differences of the objective).
    alpha = 0.05
    z = net.d(x, *terms, torch.full((1, 1, 1, 1), alpha, dtype=torch.float64), sf).requires_grad_(True)
    k = torch.from_numpy(kernel)
    blurred = torch.fft.ifft2(torch.fft.fft2(z) * data_terms(y, k[None, None], sf)[0]).real
    objective = ((blurred[..., ::sf, ::sf] - y) ** 2).sum() + alpha * ((z - x) ** 2).sum()
    objective.backward()
    assert z.grad.abs().max() < 1e-9


def test_forward_shapes_and_kernel_layouts():
    torch.manual_seed(0)
    net = USRNet(**TINY).eval()
    x = torch.rand(2, 3, 11, 13)
    k = torch.from_numpy(np.stack([setting_kernels('classical', 4)[i].kernel for i in (0, 8)])).float()
    sigma = torch.tensor([0.0, 7.65 / 255])
    with torch.no_grad():
        out = net(x, k, 3, sigma.view(2, 1, 1, 1))
        again = net(x, k[:, None], 3, sigma)
    assert out.shape == (2, 3, 33, 39)
    torch.testing.assert_close(out, again, rtol=0, atol=0)


METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True}}


def degraded_val_folder(tmp_path, setting, folder):
    """Three small HR images and their x2 degraded folders (σ_n 2.55) of ``setting``; returns the HR
    folder, the LR folder named ``folder`` and its DegradedPairedDataset options."""
    hr = tmp_path / 'HR'
    for i in range(3):
        write_png(str(hr / f'im{i}.png'), smooth_image(40, 36, seed=i, cell=6))
    make_sets('--setting', setting, '--scales', 2, '--noise', 2.55, '--hr', hr, '--out', tmp_path / 'deg')
    lq = str(tmp_path / 'deg' / setting / 'x2' / folder)
    return hr, lq, {'name': 'deg_val', 'type': 'DegradedPairedDataset', 'dataroot_gt': str(hr), 'dataroot_lq': lq,
                    'io_backend': {'type': 'disk'}}


def degraded_training_options(name, model_type, hr, val, network, train_set, ema_decay, lr):
    """Option dict of a 2-iteration x2 CPU run on DegradedOnTheFlyDataset (``train_set``: extra dataset
    options) validated on the degraded folder ``val``; a checkpoint at iteration 2."""
    dataset = {'name': 'otf', 'type': 'DegradedOnTheFlyDataset', 'dataroot_gt': str(hr), 'io_backend': {'type': 'disk'},
               'gt_size': 32, 'kernel_size': 25, 'repeat': 4, 'noise_range': [0, 10], 'num_worker_per_gpu': 0,
               'batch_size_per_gpu': 2, 'prefetch_mode': None, **train_set}
    return {
        'name': name, 'model_type': model_type, 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': dataset, 'val': val}, 'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': ema_decay, 'optim_g': {'type': 'Adam', 'lr': lr, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': 2, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 2, 'save_img': False, 'metrics': METRICS},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }


def psnr_logged_by_test_run(tmp_path, name, model_type, val, network, path):
    """Run test.py on the degraded folder ``val``; the PSNR its results table logs."""
    test = {'name': name + '_test', 'model_type': model_type, 'scale': 2, 'num_gpu': 0, 'datasets': {'test_1': val},
            'network_g': network, 'path': dict(path, strict_load_g=True), 'val': {'save_img': False, 'metrics': METRICS}}
    run_entries(('test.py', test, tmp_path / 'test.yml'))
    with open(os.path.join(ROOT, 'results', name + '_test', 'results.md')) as f:
        return float(f.read().splitlines()[-1].split('|')[2])


def test_tiny_usrnet_trains_and_tests_through_basicsr(tmp_path, exp_name):  # noqa: F811
    """Two training iterations on DegradedOnTheFlyDataset (val on a degraded folder), then test.py on
    the checkpoint: the logged PSNR equals the network run in this process."""
    hr, lq, val = degraded_val_folder(tmp_path, 'classical', 'k3_n2.55')
    network = {'type': 'USRNet', 'upscale': 2, **TINY}
    train = degraded_training_options(exp_name, 'USRNetModel', hr, val, network, {}, ema_decay=0, lr=1e-4)
    output = run_entries(('train.py', train, tmp_path / 'train.yml'))[0]
    assert 'l_pix' in output and 'deg_val' in output
    weights = os.path.join(ROOT, 'experiments', exp_name, 'models', 'net_g_2.pth')
    logged = psnr_logged_by_test_run(tmp_path, exp_name, 'USRNetModel', val, network, {'pretrain_network_g': weights})

    from basicsr.metrics import calculate_psnr
    from basicsr.utils import img2tensor, tensor2img
    net = USRNet(**TINY)
    net.load_state_dict(torch.load(weights, weights_only=True)['params'])
    net.eval()
    kernel = torch.from_numpy(np.load(os.path.join(lq, 'kernel.npy'))).float()[None]
    values = []
    for name in sorted(os.listdir(hr)):
        x = img2tensor(cv2.imread(os.path.join(lq, name)).astype(np.float32) / 255, bgr2rgb=True)[None]
        with torch.no_grad():
            sr = net(x, kernel, 2, torch.tensor([2.55 / 255]))
        values.append(calculate_psnr(tensor2img(sr), cv2.imread(str(hr / name)), crop_border=2, test_y_channel=True))
    assert logged == pytest.approx(np.mean(values), abs=1e-4)
