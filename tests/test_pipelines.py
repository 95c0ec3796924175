"""Real BasicSR train/test pipelines through the plugin's entry points, on tiny generated data.

BasicSR puts experiments/<name> and results/<name> under the repository root, so each test uses a
unique name (pytest session + test folder) and removes those folders afterwards.
"""
import glob
import json
import os
import shutil

import forked_python
import pytest
import torch
import yaml

from cfsrdelta_arch.archs.cfsr_arch import CFSR
from conftest import ROOT, TINY_CFSR

SCALE = 2
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True}}


@pytest.fixture
def exp_name(tmp_path):
    """Unique experiment name; experiments/, results/ and tb_logger/ entries are removed afterwards."""
    name = f'pytest_{tmp_path.parent.name}_{tmp_path.name}'.replace('-', '_')
    yield name
    for top in ('experiments', 'results', 'tb_logger'):
        for path in glob.glob(os.path.join(ROOT, top, glob.escape(name) + '*')):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backbone_path(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'tiny_backbone_x2.pth'
    torch.save({'params': CFSR(embed_dim=8, depths=(1,), upscale=SCALE).state_dict()}, path)
    return str(path)


def paired(name, hr_dir, lr_dir, **extra):
    return {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': hr_dir, 'dataroot_lq': lr_dir,
            'filename_tmpl': f'{{}}x{SCALE}', 'io_backend': {'type': 'disk'}, **extra}


def train_options(name, data, backbone, total_iter=2, lr=1e-3, val_extra=None, resume_state=None):
    hr_dir, lr_dir = data
    return {
        'name': name, 'model_type': 'BackboneDeltaModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': paired('tiny_train', hr_dir, lr_dir, gt_size=32, use_hflip=True, use_rot=True,
                            num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=10,
                            prefetch_mode=None),
            'val': paired('tiny_val', hr_dir, lr_dir),
        },
        'network_g': {'type': 'BackboneDelta', 'backbone': dict(TINY_CFSR),
                      'refiner': {'type': 'LRRefineNet', 'upscale': SCALE, 'width': 8, 'num_convs': 2},
                      'backbone_weights': backbone},
        'path': {'pretrain_network_g': None, 'strict_load_g': True,
                 'resume_state': resume_state},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': lr, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1FFTLoss', 'fft_weight': 0.005, 'ramp_iters': 2}},
        'val': {'val_freq': 1, 'save_img': False, 'save_best': True, 'metrics': METRICS, **(val_extra or {})},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }


def run_entries(*jobs):
    """Run ``cfsrdelta_arch/<script> -opt <opt_path>`` for each (script, opt, opt_path), concurrently
    (tests/forked_python.py), after writing ``opt`` to ``opt_path``; returns their stdout + stderr."""
    procs = []
    for script, opt, opt_path in jobs:
        with open(opt_path, 'w') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        procs.append(forked_python.ForkedCommand([os.path.join(ROOT, 'cfsrdelta_arch', script), '-opt', opt_path],
                                                 ROOT))
    done = [proc.wait(300) for proc in procs]
    for run in done:
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return [run.stdout + run.stderr for run in done]


def run_entry(script, opt, opt_path):
    """:func:`run_entries` for one run."""
    return run_entries((script, opt, opt_path))[0]


def expected_psnr(weights, hr_dir, lr_dir, val):
    """Mean Y-PSNR of the tiny CFSR with the same self-ensemble/tiling, computed in this process."""
    import cv2
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import img2tensor, tensor2img

    from cfsrdelta_arch.utils.inference import super_resolve
    from cfsrdelta_arch.utils.weights import load_weights
    net = load_weights(CFSR(embed_dim=8, depths=(1,), upscale=SCALE), weights).eval()
    values = []
    for name in sorted(os.listdir(hr_dir)):
        hr = cv2.imread(os.path.join(hr_dir, name))
        lr = cv2.imread(os.path.join(lr_dir, name.replace('.png', f'x{SCALE}.png')))
        x = img2tensor(lr.astype('float32') / 255.0, bgr2rgb=True, float32=True)[None]
        with torch.no_grad():
            sr = super_resolve(net, x, SCALE, self_ensemble_on=val['self_ensemble'],
                               tile_size=val['tile']['size'], tile_overlap=val['tile']['overlap'])
        values.append(calculate_psnr(tensor2img(sr), hr, crop_border=SCALE, test_y_channel=True))
    return sum(values) / len(values)


def read_logs(folder, prefix):
    logs = sorted(glob.glob(os.path.join(folder, f'{prefix}_*.log')))
    assert logs, f'no {prefix} log in {folder}'
    return [open(p).read() for p in logs]


def test_train_save_best_then_resume_on_cpu(tmp_path, tiny_dataset, backbone_path, exp_name):
    data = tiny_dataset(SCALE, n=3, size=48)
    uninterrupted = exp_name + '_uninterrupted'  # removed with exp_name
    run_entries(('train.py', train_options(exp_name, data, backbone_path), tmp_path / 'train.yml'),
                ('train.py', train_options(uninterrupted, data, backbone_path, total_iter=4), tmp_path / 'u.yml'))
    exp = os.path.join(ROOT, 'experiments', exp_name)
    models = os.path.join(exp, 'models')
    for f in ('net_g_2.pth', 'net_g_latest.pth', 'net_g_best.pth'):
        assert os.path.isfile(os.path.join(models, f)), f
    state = os.path.join(exp, 'training_states', '2.state')
    assert os.path.isfile(state)
    best = json.load(open(os.path.join(exp, 'best.json')))
    assert best['dataset'] == 'tiny_val' and best['metric'] == 'psnr'
    assert best['iter'] in (1, 2) and best['value'] > 0
    ckpt = torch.load(os.path.join(models, 'net_g_best.pth'), map_location='cpu', weights_only=True)
    assert all(k.startswith('body.') for k in ckpt['params'])  # refiner only

    # Resume on the CPU from the saved state (path.resume_state) and continue to iteration 4: the
    # refiner equals the uninterrupted 4-iteration run's bit for bit, so weights, optimiser, scheduler,
    # RNGs and data position all came back.
    opt = train_options(exp_name, data, backbone_path, total_iter=4, resume_state=state)
    run_entry('train.py', opt, tmp_path / 'resume.yml')

    def refiner(name, it):
        path = os.path.join(ROOT, 'experiments', name, 'models', f'net_g_{it}.pth')
        return torch.load(path, map_location='cpu', weights_only=True)['params']
    resumed, expected, start = refiner(exp_name, 4), refiner(uninterrupted, 4), refiner(exp_name, 2)
    assert list(resumed) == list(expected)
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    assert not all(torch.equal(resumed[k], start[k]) for k in start)  # iterations 3 and 4 did train

    # The same state with part of the refiner kept fixed would hand the optimiser's state to other
    # parameters: refused in one line, naming what differs.
    opt['train']['fixed_refiner_params'] = ['body.0']
    with open(tmp_path / 'fixed.yml', 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    run = forked_python.ForkedCommand([os.path.join(ROOT, 'cfsrdelta_arch', 'train.py'), '-opt',
                                       str(tmp_path / 'fixed.yml')], ROOT).wait(300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        'error: the training state of iter 2 was saved with other trainable parameters (differing: '
        'refiner.body.0.bias, refiner.body.0.weight); resume with the options it was saved with, or start a new run')


def test_early_stopping_ends_training_cleanly(tmp_path, tiny_dataset, backbone_path, exp_name):
    data = tiny_dataset(SCALE, n=2, size=32)
    # lr 0: the refiner never changes, so the second validation brings no gain and patience 1 stops.
    opt = train_options(exp_name, data, backbone_path, total_iter=50, lr=0.0,
                        val_extra={'early_stopping': {'patience': 1, 'min_delta': 0.0}})
    output = run_entry('train.py', opt, tmp_path / 'early.yml')
    exp = os.path.join(ROOT, 'experiments', exp_name)
    log = read_logs(exp, 'train')[-1]
    assert 'early stop at iter 2' in log and 'net_g_best.pth' in log
    assert 'early stop' in output
    assert os.path.isfile(os.path.join(exp, 'models', 'net_g_best.pth'))
    assert json.load(open(os.path.join(exp, 'best.json')))['iter'] == 1
    assert not os.path.exists(os.path.join(exp, 'models', 'net_g_latest.pth'))  # stopped before the end


def test_test_pipeline_writes_results_and_skips_missing_sets(tmp_path, tiny_dataset, backbone_path, exp_name):
    hr_dir, lr_dir = tiny_dataset(SCALE, n=2, size=40)
    missing = str(tmp_path / 'no_such_set' / 'HR')
    opt = {
        'name': exp_name, 'model_type': 'TTASRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': paired('tiny', hr_dir, lr_dir),
                     'test_2': paired('absent', missing, lr_dir)},
        'network_g': dict(TINY_CFSR),
        'path': {'pretrain_network_g': backbone_path, 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': False, 'suffix': None, 'self_ensemble': True, 'tile': {'size': 12, 'overlap': 8},
                'metrics': {**METRICS, 'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE,
                                                'test_y_channel': True}}},
    }
    output = run_entry('test.py', opt, tmp_path / 'test.yml')
    assert f'Skipping absent: missing {missing}' in output
    results = os.path.join(ROOT, 'results', exp_name)
    table = open(os.path.join(results, 'results.md')).read().splitlines()
    assert table[0] == '| dataset | psnr | ssim |'
    rows = [line for line in table if line.startswith('| tiny |')]
    assert len(rows) == 1 and not any('absent' in line for line in table)
    psnr, ssim = (float(v) for v in rows[0].strip('|').split('|')[1:])
    assert psnr == pytest.approx(expected_psnr(backbone_path, hr_dir, lr_dir, opt['val']), abs=2e-4)
    assert 0 < ssim <= 1
    assert 'Skipping absent' in read_logs(results, 'test')[-1]
