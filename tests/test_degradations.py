"""Degraded test sets (docs/degradation_protocol.md), their paired dataset and the on-the-fly training data."""
import json
import os

import cv2
import forked_python
import numpy as np
import pytest
import scipy.io
import torch
from basicsr.utils.matlab_functions import imresize
from scipy import ndimage

from conftest import read_tree, run_script, smooth_image, write_png
from cfsrdelta_arch.data.degradations import KERNELS_FILE, blur, read_degradation, setting_kernels
from cfsrdelta_arch.data.degraded_onthefly_dataset import DegradedOnTheFlyDataset, motion_kernel, sample_generators
from cfsrdelta_arch.data.degraded_paired_dataset import DegradedPairedDataset
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError
from test_data_scripts import load_script


def make_sets(*args):
    """Run scripts/make_degraded_lr.py's main in this process (faster than a subprocess)."""
    load_script('make_degraded_lr').main([str(a) for a in args])


def protocol_lr(hr, kernel, scale, setting, noise_sigma):
    """The protocol's steps written out: float64 HR/255, per-channel convolve, bicubic or [0::s, 0::s],
    noise from default_rng(0) re-seeded per image, floor(x * 255 + 0.5)."""
    h, w = hr.shape[:2]
    x = hr[:h - h % scale, :w - w % scale].astype(np.float64) / 255.0
    mode = 'reflect' if setting == 'gaussian8' else 'wrap'
    blurred = np.stack([ndimage.convolve(x[..., c], kernel, mode=mode) for c in range(3)], axis=-1)
    lr = imresize(blurred, 1 / scale) if setting == 'gaussian8' else blurred[0::scale, 0::scale]
    lr = lr + noise_sigma / 255.0 * np.random.default_rng(0).standard_normal(lr.shape)
    return np.clip(np.floor(lr * 255 + 0.5), 0, 255).astype(np.uint8)


@pytest.fixture
def hr_folder(tmp_path):
    """Two HR images whose sizes are not multiples of 3 or 4 (mod-crop matters)."""
    folder = tmp_path / 'HR'
    write_png(str(folder / 'a.png'), smooth_image(30, 35, seed=1))
    write_png(str(folder / 'b.png'), smooth_image(26, 22, seed=2))
    return folder


def test_kernel_file_has_12_normalised_kernels():
    cells = scipy.io.loadmat(KERNELS_FILE)['kernels']
    assert cells.shape == (1, 12)
    kernels = setting_kernels('classical', 4)
    assert [k.name for k in kernels] == [f'k{i}' for i in range(1, 13)]
    for i, k in enumerate(kernels):
        assert k.kernel.shape == (25, 25) and k.kernel.dtype == np.float64
        assert abs(k.kernel.sum() - 1) < 1e-6
        np.testing.assert_array_equal(k.kernel, cells[0, i].astype(np.float64))


def test_gaussian8_kernels_follow_the_formula():
    kernels = setting_kernels('gaussian8', 4)
    assert [k.name for k in kernels] == ['g1.80', 'g2.00', 'g2.20', 'g2.40', 'g2.60', 'g2.80', 'g3.00', 'g3.20']
    i, j = np.mgrid[:21, :21]
    for k in kernels:
        expected = np.exp(-((i - 10) ** 2 + (j - 10) ** 2) / (2 * k.sigma ** 2))
        np.testing.assert_allclose(k.kernel, expected / expected.sum(), rtol=1e-12, atol=1e-15)
    assert [round(k.sigma, 4) for k in setting_kernels('gaussian8', 2)][::7] == [0.8, 1.6]


@pytest.mark.parametrize('setting,scale,kernel_name', [('gaussian8', 4, 'g2.40'), ('classical', 3, 'k10')])
def test_folders_equal_the_protocol_steps(hr_folder, tmp_path, setting, scale, kernel_name):
    out = tmp_path / 'deg'
    make_sets('--setting', setting, '--scales', scale, '--noise', 0, 7.65, '--hr', hr_folder, '--out', out)
    kernel = {k.name: k for k in setting_kernels(setting, scale)}[kernel_name]
    for noise in (0.0, 7.65):
        folder = out / setting / f'x{scale}' / f'{kernel_name}_n{noise:.2f}'
        assert sorted(os.listdir(folder)) == ['a.png', 'b.png', 'degradation.json', 'kernel.npy']
        for name in ('a.png', 'b.png'):
            hr = cv2.imread(str(hr_folder / name))
            np.testing.assert_array_equal(cv2.imread(str(folder / name)), protocol_lr(hr, kernel.kernel, scale,
                                                                                      setting, noise))
        saved_kernel, record = read_degradation(str(folder))
        assert saved_kernel.dtype == np.float64
        np.testing.assert_array_equal(saved_kernel, kernel.kernel)
        assert record == {'setting': setting, 'scale': scale, 'kernel': kernel_name, 'kernel_sigma': kernel.sigma,
                          'noise_sigma': noise, 'seed': 0}
    n_kernels = 8 if setting == 'gaussian8' else 12
    assert len(os.listdir(out / setting / f'x{scale}')) == 2 * n_kernels
    assert not [n for n in os.listdir(out / setting / f'x{scale}') if n.startswith('.')]  # no staging left


def test_bad_input_is_one_line_and_writes_nothing(hr_folder, tmp_path):
    out = tmp_path / 'deg'
    tiny = tmp_path / 'tiny'
    write_png(str(tiny / 't.png'), smooth_image(3, 8))
    (tmp_path / 'empty').mkdir()
    cases = [(['--setting', 'bicubic', '--hr', hr_folder], "unknown degradation setting 'bicubic'"),
             (['--setting', 'classical', '--hr', tmp_path / 'nowhere'], 'not a folder'),
             (['--setting', 'classical', '--hr', tmp_path / 'empty'], 'no images'),
             (['--setting', 'classical', '--hr', tiny], 'smaller than the scale 4'),
             (['--setting', 'gaussian8', '--scales', 5, '--hr', hr_folder], 'defined for scales'),
             (['--setting', 'classical', '--hr', hr_folder, '--out', hr_folder / 'deg'], 'is inside the input')]
    for args, message in cases:
        args = [str(a) for a in args]
        args += [] if '--scales' in args else ['--scales', '4']
        args += [] if '--out' in args else ['--out', str(out)]
        with pytest.raises(SystemExit, match=message):
            make_sets(*args)
        assert not out.exists() and not (hr_folder / 'deg').exists()
    result = run_script('make_degraded_lr', *args)  # as a user runs it: one line, exit status 1
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [f'error: {result.stderr.strip()[7:]}']


def test_existing_output_is_refused_or_rebuilt_whole(hr_folder, tmp_path):
    out = tmp_path / 'deg'
    args = ('--setting', 'classical', '--scales', 2, '--hr', hr_folder, '--out', out)
    make_sets(*args)
    folder = out / 'classical' / 'x2' / 'k5_n0.00'
    (folder / 'stale.png').write_bytes(b'old')
    before = read_tree(str(out))
    with pytest.raises(SystemExit, match='exists; pass --overwrite'):
        make_sets(*args)
    assert read_tree(str(out)) == before
    make_sets(*args, '--overwrite')
    after = read_tree(str(out))
    assert os.path.join('classical', 'x2', 'k5_n0.00', 'stale.png') not in after
    assert {k: v for k, v in before.items() if 'stale' not in k} == after


def test_degraded_paired_dataset_adds_kernel_and_noise(hr_folder, tmp_path):
    out = tmp_path / 'deg'
    make_sets('--setting', 'classical', '--scales', 4, '--noise', 7.65, '--hr', hr_folder, '--out', out)
    lq_dir = out / 'classical' / 'x4' / 'k2_n7.65'
    opt = {'name': 't', 'dataroot_gt': str(hr_folder), 'dataroot_lq': str(lq_dir), 'io_backend': {'type': 'disk'},
           'scale': 4, 'phase': 'val'}
    dataset = DegradedPairedDataset(opt)
    assert len(dataset) == 2
    item = dataset[0]
    assert item['lq'].shape == (3, 7, 8) and item['gt'].shape == (3, 28, 32)  # HR mod-cropped (30x35 -> 28x32)
    torch.testing.assert_close(item['kernel'], torch.from_numpy(setting_kernels('classical', 4)[1].kernel).float())
    assert item['noise_sigma'].item() == pytest.approx(7.65)
    with pytest.raises(DatasetError, match='made for x4 but scale is 2'):
        DegradedPairedDataset(dict(opt, scale=2))
    with pytest.raises(DatasetError, match='kernel.npy is missing'):
        DegradedPairedDataset(dict(opt, dataroot_lq=str(hr_folder)))


# ---- on-the-fly training data -------------------------------------------------------------------------

def onthefly_options(hr_folder, **overrides):
    opt = {'name': 'otf', 'type': 'DegradedOnTheFlyDataset', 'dataroot_gt': str(hr_folder),
           'io_backend': {'type': 'disk'}, 'scale': 2, 'gt_size': 16, 'phase': 'train', 'noise_range': [0, 25],
           'use_hflip': True, 'use_rot': True, 'repeat': 4, 'seed': 3}
    return dict(opt, **overrides)


def test_onthefly_samples_are_deterministic(hr_folder):
    dataset = DegradedOnTheFlyDataset(onthefly_options(hr_folder))
    assert len(dataset) == 8
    again = DegradedOnTheFlyDataset(onthefly_options(hr_folder))
    for index in (5, 0):  # any order: a sample depends on (seed, index) only
        a, b = dataset[index], again[index]
        for key in ('lq', 'gt', 'kernel', 'noise_sigma'):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    kernels = [dataset[i]['kernel'] for i in range(8)]
    assert all(not torch.equal(kernels[0], k) for k in kernels[1:])
    other_seed = DegradedOnTheFlyDataset(onthefly_options(hr_folder, seed=4))
    assert not torch.equal(other_seed[0]['kernel'], kernels[0])
    # Worker processes do not change the data. Checked in a process of its own (tests/forked_python.py):
    # forking this pytest process (every runtime the suite loaded, with their threads) for DataLoader
    # workers made pytest die of a SIGSEGV in a later test of the full suite.
    code = (f'import json, torch, cfsrdelta_arch\n'
            f'from cfsrdelta_arch.data.degraded_onthefly_dataset import DegradedOnTheFlyDataset\n'
            f'ds = DegradedOnTheFlyDataset({onthefly_options(hr_folder)!r})\n'
            f'batches = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2))\n'
            f'print(json.dumps([b["lq"].tolist() for b in batches] + [list(batches[0]["kernel"].shape)]))')
    proc = forked_python.run(['-c', code], os.getcwd(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *batches, kernel_shape = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = torch.stack([dataset[i]['lq'] for i in range(8)])
    torch.testing.assert_close(torch.tensor(batches).flatten(0, 1), expected, rtol=0, atol=0)
    assert kernel_shape == [4, 25, 25]


@pytest.mark.parametrize('model', ['classical', 'gaussian8'])
def test_onthefly_lq_is_the_degraded_gt(hr_folder, model):
    dataset = DegradedOnTheFlyDataset(onthefly_options(hr_folder, degradation=model, kernel_size=15,
                                                       motion_length_range=[3, 12]))
    for index in range(6):
        item = dataset[index]
        assert item['gt'].shape == (3, 16, 16) and item['lq'].shape == (3, 8, 8)
        assert item['kernel'].shape == (15, 15) and abs(item['kernel'].sum().item() - 1) < 1e-5
        assert 0 <= item['noise_sigma'].item() <= 25
        # Recompute from the returned HR (RGB float32 holding exact 8-bit values) and kernel.
        hr = item['gt'].permute(1, 2, 0).numpy()[..., ::-1].astype(np.float64)
        kernel = item['kernel'].double().numpy()
        mode = 'wrap' if model == 'classical' else 'reflect'
        blurred = np.stack([ndimage.convolve(hr[..., c], kernel, mode=mode) for c in range(3)], axis=-1)
        lr = blurred[0::2, 0::2] if model == 'classical' else imresize(blurred, 0.5)
        noise_rng = sample_generators(3, index)[2]
        sigma = noise_rng.uniform(0, 25)
        assert sigma == pytest.approx(item['noise_sigma'].item())
        lr = lr + sigma / 255 * noise_rng.standard_normal(lr.shape)
        expected = np.clip(np.floor(lr * 255 + 0.5), 0, 255) / 255
        got = item['lq'].permute(1, 2, 0).numpy()[..., ::-1]
        # float32 kernel and HR from the tensors: at most a rare one-level rounding difference
        assert np.abs(got - expected).max() <= 1 / 255 + 1e-6
        assert np.mean(np.abs(got - expected) > 1e-6) < 0.02


@pytest.mark.parametrize('model,mode', [('gaussian8', 'reflect'), ('classical', 'wrap')])
@pytest.mark.parametrize('shape,kernel_shape', [((20, 31, 3), (25, 25)), ((5, 7, 3), (25, 25)), ((9, 9, 1), (3, 5))])
def test_blur_is_the_protocols_scipy_convolve(model, mode, shape, kernel_shape):
    # including kernels wider than the image, where the border continues more than once
    rng = np.random.default_rng(1)
    x, kernel = rng.random(shape), rng.random(kernel_shape)
    kernel /= kernel.sum()
    expected = np.stack([ndimage.convolve(x[..., c], kernel, mode=mode) for c in range(shape[2])], axis=-1)
    np.testing.assert_allclose(blur(x, kernel, model), expected, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match='odd sizes'):
        blur(x, np.ones((4, 3)) / 12, model)


def test_motion_kernel():
    k = motion_kernel(25, 20, 0.0)
    assert k.shape == (25, 25) and abs(k.sum() - 1) < 1e-12
    np.testing.assert_allclose(k.sum(axis=1)[12], 1)  # horizontal: all mass on the centre row
    np.testing.assert_allclose(motion_kernel(25, 24, np.pi / 2), motion_kernel(25, 24, 0.0).T, atol=1e-12)


def test_onthefly_option_errors(hr_folder):
    cases = [({'gt_size': 15}, 'not a multiple of the scale'), ({'degradation': 'bicubic'}, 'unknown degradation'),
             ({'kernel_list': ['iso', 'disk'], 'kernel_prob': [1, 1]}, 'known types'),
             ({'dataset_enlarge_ratio': 10}, 'use repeat'), ({'gt_size': 64}, 'smaller than gt_size 64')]
    for overrides, message in cases:
        with pytest.raises(DatasetError, match=message):
            DegradedOnTheFlyDataset(onthefly_options(hr_folder, **overrides))
