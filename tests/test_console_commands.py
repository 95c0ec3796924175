"""The installed commands ``cfsrdelta-train`` / ``cfsrdelta-test`` (setup.py entry points): run from a
temporary working directory, their experiments/ and results/ land there, not in the repository.

The main venv's editable install predates these entry points, so the functions they name are run the
way the generated scripts run them (``from module import main; main()``), with the names read from
setup.py's entry points.
"""
import ast
import importlib
import os
import shutil
import sys

import cv2
import forked_python
import pytest
import torch
import yaml
from basicsr.metrics import calculate_psnr

from cfsrdelta_arch.app.engine import SREngine
from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
from cfsrdelta_arch.utils.weights import load_state_dict_file, load_weights
from conftest import ROOT, TINY_CFSR, checkout_env, write_tiny_dataset, write_tiny_model

SCALE = TINY_CFSR['upscale']


def console_scripts():
    """{command: 'module:function'} from setup.py's entry_points, read with ``ast`` (not run)."""
    tree = ast.parse(open(os.path.join(ROOT, 'setup.py'), encoding='utf-8').read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'setup')
    entries = ast.literal_eval(next(k.value for k in call.keywords if k.arg == 'entry_points'))
    return dict(e.replace(' ', '').split('=') for e in entries['console_scripts'])


def command(name, *args):
    """``python`` arguments running console script ``name`` as the generated wrapper does."""
    module, function = console_scripts()[name].split(':')
    return ['-c', f'import sys; from {module} import {function}; sys.exit({function}())', *args]


def options(name, data, weights, train):
    hr_dir, lr_dir = data
    dataset = {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': hr_dir, 'dataroot_lq': lr_dir,
               'filename_tmpl': f'{{}}x{SCALE}', 'io_backend': {'type': 'disk'}}
    opt = {'name': name, 'model_type': 'TTASRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
           'network_g': dict(TINY_CFSR), 'path': {'pretrain_network_g': weights, 'strict_load_g': True}}
    if not train:
        return {**opt, 'datasets': {'test_1': dataset},
                'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE,
                                             'test_y_channel': True}}}}
    return {**opt,
            'datasets': {'train': {**dataset, 'gt_size': 32, 'use_hflip': False, 'use_rot': False,
                                   'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1,
                                   'prefetch_mode': None}},
            'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                      'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                      'total_iter': 2, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss'}},
            'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False,
                       'wandb': {'project': None, 'resume_id': None}}}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Both commands run concurrently from their own working directory 'work' (its options and data
    elsewhere); yields {command: (working directory, run name, weights, data, CompletedProcess)}."""
    base = tmp_path_factory.mktemp('console')
    data = write_tiny_dataset(str(base / 'data'), SCALE, n=2, size=32)
    _, weights = write_tiny_model(str(base))
    name = f'pytest_console_{base.name}'.replace('-', '_')
    jobs = {}
    for cmd in ('cfsrdelta-test', 'cfsrdelta-train'):
        work = base / cmd / 'work'
        work.mkdir(parents=True)
        opt_path = base / cmd / 'opt.yml'
        opt_path.write_text(yaml.safe_dump(options(name, data, weights, cmd.endswith('train'))))
        jobs[cmd] = (work, forked_python.ForkedCommand(command(cmd, '-opt', opt_path), work, checkout_env()))
    outputs = {}
    for cmd, (work, proc) in jobs.items():
        done = proc.wait(300)
        outputs[cmd] = (work, name, weights, data, done.stdout + done.stderr, done.returncode)
    yield outputs
    for top in ('experiments', 'results', 'tb_logger'):  # only there if the root were wrong
        path = os.path.join(ROOT, top, name)
        if os.path.isdir(path):
            shutil.rmtree(path)


def test_entry_points_are_declared():
    assert console_scripts() == {'cfsrdelta-infer': 'cfsrdelta_arch.app.cli:main',
                                 'cfsrdelta-train': 'cfsrdelta_arch.train:main',
                                 'cfsrdelta-test': 'cfsrdelta_arch.test:main'}


def test_cfsrdelta_test_writes_results_under_the_working_directory(runs):
    work, name, weights, (hr_dir, lr_dir), output, status = runs['cfsrdelta-test']
    assert status == 0, output[-4000:]
    table = (work / 'results' / name / 'results.md').read_text().splitlines()
    assert table[0] == '| dataset | psnr |'
    reported = float(table[2].split('|')[2])
    engine = SREngine(load_weights(build_from_options(TINY_CFSR), weights), SCALE, device='cpu')
    values = []
    for hr_name in sorted(os.listdir(hr_dir)):  # BGR images, as BasicSR's Y-channel PSNR takes them
        lr = cv2.imread(os.path.join(lr_dir, hr_name.replace('.png', f'x{SCALE}.png')))
        sr = engine.enhance(lr, channel_order='bgr')
        values.append(calculate_psnr(sr, cv2.imread(os.path.join(hr_dir, hr_name)), SCALE, test_y_channel=True))
    assert reported == pytest.approx(sum(values) / len(values), abs=1e-3)
    assert not os.path.exists(os.path.join(ROOT, 'results', name))


def test_cfsrdelta_train_writes_experiments_under_the_working_directory(runs):
    work, name, weights, _, output, status = runs['cfsrdelta-train']
    assert status == 0, output[-4000:]
    trained = load_state_dict_file(str(work / 'experiments' / name / 'models' / 'net_g_2.pth'))
    start = load_state_dict_file(weights)
    assert trained.keys() == start.keys() and any(not torch.equal(trained[k], start[k]) for k in start)
    assert (work / 'experiments' / name / 'training_states' / '2.state').is_file()
    assert not os.path.exists(os.path.join(ROOT, 'experiments', name))


@pytest.mark.parametrize('cmd', ['cfsrdelta-test', 'cfsrdelta-train'])
def test_mistake_is_one_line_and_debug_shows_the_traceback(cmd, tmp_path, monkeypatch, capsys):
    module, function = console_scripts()[cmd].split(':')
    main = getattr(importlib.import_module(module), function)
    missing = str(tmp_path / 'missing.yml')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', [cmd, '-opt', missing])
    with pytest.raises(SystemExit) as info:
        main()
    assert str(info.value.code).startswith(f'error: {missing}') and '\n' not in str(info.value.code)
    monkeypatch.setattr(sys, 'argv', [cmd, '-opt', missing, '--debug'])
    with pytest.raises(ValueError, match='missing.yml'):  # the OptionFileError itself
        main()
    assert os.listdir(tmp_path) == []  # nothing created for a refused run
