"""One line, not a traceback: user mistakes in option files, checkpoints and datasets.

The failures are run as a user meets them (``python cfsrdelta_arch/test.py -opt bad.yml``,
``python cfsrdelta_arch/train.py -opt bad.yml``, a foreign project's ``python -c ...``,
``python scripts/make_benchmark_lr.py``), in processes of their own (tests/forked_python.py) on files
in a temporary folder: exit status non-zero, the last line of stderr is the only ``error:`` line and
names the file or key, no traceback. They all start at once (:func:`commands`), one per entry point
and kind of failure; the other cases go through the function both entry points call
first, ``check_command_line``, next to good inputs that must pass it. Good end-to-end runs of both
entry points are in test_pipelines.py and test_foreign_project.py.
"""
import concurrent.futures
import copy
import glob
import os
import shutil
import sys
from collections import OrderedDict

import cv2
import forked_python
import numpy as np
import pytest
import torch
import yaml

from cfsrdelta_arch.app.options import check_command_line, run_cli
from cfsrdelta_arch.archs.cfsr_arch import CFSR
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError
from cfsrdelta_arch.utils.fileio import OptionFileError
from cfsrdelta_arch.utils.weights import CheckpointError, load_state_dict_file
from conftest import ROOT, TINY_CFSR, checkout_env, encode_base, write_tiny_dataset

SCALE = 2
PSNR = {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True}}
FOREIGN = ('import cfsrdelta_arch; from basicsr.utils.options import parse_options; '
           'parse_options(".", is_train=False); print("parsed")')


def payload(marker):
    """YAML whose tag, under BasicSR's own (full) loader, creates ``marker``."""
    return f"name: planted\nnum_gpu: 0\nrun: !!python/object/apply:builtins.open ['{marker}', 'w']\n"


def paired(name, hr_dir, lr_dir, scale=SCALE, **extra):
    return {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': hr_dir, 'dataroot_lq': lr_dir,
            'filename_tmpl': f'{{}}x{scale}', 'io_backend': {'type': 'disk'}, **extra}


def good_test_options(w, name='faults'):
    """Good test options: tiny CFSR x2 with its checkpoint, one tiny paired set."""
    return {'name': name, 'model_type': 'TTASRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
            'datasets': {'test_1': paired('tiny', w['hr'], w['lr'])},
            'network_g': dict(TINY_CFSR),
            'path': {'pretrain_network_g': w['ckpt'], 'param_key_g': 'params', 'strict_load_g': True},
            'val': {'save_img': False, 'metrics': PSNR}}


def good_train_options(w, name='faults'):
    """Good training options: a refiner on the frozen tiny CFSR from a cached SR_base, paired validation."""
    train_set = dict(paired('tiny_train', w['hr'], w['lr'], gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0),
                     type='PairedCachedBaseDataset', dataroot_base=w['base'])
    return {'name': name, 'model_type': 'BackboneDeltaModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
            'datasets': {'train': train_set, 'val': paired('tiny_val', w['hr'], w['lr'])},
            'network_g': {'type': 'BackboneDelta', 'backbone': dict(TINY_CFSR), 'backbone_weights': w['ckpt'],
                          'refiner': {'type': 'LRRefineNet', 'upscale': SCALE, 'width': 8, 'num_convs': 2}},
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
            'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                      'scheduler': {'type': 'MultiStepLR', 'milestones': [100]}, 'total_iter': 2,
                      'pixel_opt': {'type': 'L1FFTLoss', 'fft_weight': 0.005, 'ramp_iters': 2}},
            'val': {'val_freq': 1, 'save_img': False, 'metrics': PSNR},
            'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False}}


def write_options(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def write_fake_lmdb(folder, sizes):
    """An LMDB folder holding only its meta_info.txt ({key: (h, w)}): all the checks read."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'meta_info.txt'), 'w') as f:
        f.writelines(f'{key}.png ({h},{w},3) 1\n' for key, (h, w) in sizes.items())
    return folder


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Tiny data (good and broken variants), a tiny CFSR x2 checkpoint and broken checkpoints."""
    root = tmp_path_factory.mktemp('faults')
    w = {'root': root, 'name': f'pytest_faults_{root.name}'.replace('-', '_')}  # results/<name> of failed runs
    w['hr'], w['lr'] = write_tiny_dataset(str(root / 'good'), SCALE, n=2, size=48)
    w['base'] = str(root / 'good' / 'SRbase')  # 16-bit SR_base, named like the HR files, s x LR
    os.makedirs(w['base'])
    for name in os.listdir(w['hr']):
        with open(os.path.join(w['base'], name), 'wb') as f:
            f.write(encode_base(np.full((48, 48, 3), 0.5)))
    torch.manual_seed(0)
    w['ckpt'] = str(root / 'tiny_x2.pth')
    torch.save({'params': CFSR(**{k: v for k, v in TINY_CFSR.items() if k != 'type'}).state_dict()}, w['ckpt'])

    def variant(name, edit):
        """A copy of the good data with ``edit(hr_dir, lr_dir)`` applied; returns (hr_dir, lr_dir)."""
        hr, lr = (os.path.join(root, name, os.path.relpath(d, root / 'good')) for d in (w['hr'], w['lr']))
        shutil.copytree(root / 'good', root / name)
        edit(hr, lr)
        return hr, lr

    w['unpaired'] = variant('unpaired', lambda hr, lr: os.rename(os.path.join(lr, 'img1x2.png'),
                                                                  os.path.join(lr, 'img1_x2.png')))
    w['undersized'] = variant('undersized', lambda hr, lr: cv2.imwrite(  # LR 12x12 for a 48x48 HR at x2
        os.path.join(lr, 'img0x2.png'), cv2.imread(os.path.join(lr, 'img0x2.png'))[:12, :12]))
    # B100-style: an HR that is not a multiple of the scale (49x49), LR = HR // scale; BasicSR crops the HR.
    w['uneven'] = variant('uneven', lambda hr, lr: cv2.imwrite(os.path.join(hr, 'img0.png'), cv2.copyMakeBorder(
        cv2.imread(os.path.join(hr, 'img0.png')), 0, 1, 0, 1, cv2.BORDER_REPLICATE)))
    w['bad_base'] = str(root / 'bad_base')  # SR_base of another scale: 96x96 for a 24x24 LR at x2
    shutil.copytree(w['base'], w['bad_base'])
    with open(os.path.join(w['bad_base'], 'img1.png'), 'wb') as f:
        f.write(encode_base(np.full((96, 96, 3), 0.5)))
    sizes = {'img0': (48, 48), 'img1': (48, 48)}
    w['lmdb_hr'] = write_fake_lmdb(str(root / 'hr.lmdb'), sizes)
    w['lmdb_lr'] = write_fake_lmdb(str(root / 'lr.lmdb'), {k: (24, 24) for k in sizes})
    w['lmdb_no_meta'] = str(root / 'no_meta.lmdb')
    os.makedirs(w['lmdb_no_meta'])
    w['empty_ckpt'] = str(root / 'empty.pth')
    open(w['empty_ckpt'], 'wb').close()
    w['truncated_ckpt'] = str(root / 'truncated.pth')
    with open(w['ckpt'], 'rb') as src, open(w['truncated_ckpt'], 'wb') as dst:
        dst.write(src.read()[:3000])
    w['text_ckpt'] = str(root / 'notes.pth')
    with open(w['text_ckpt'], 'w') as f:
        f.write('not a checkpoint\n')
    w['list_ckpt'] = str(root / 'list.pth')
    torch.save([1, 2], w['list_ckpt'])
    return w


# ----------------------------------------------------------------------------------- as a user runs them

def commands(w):
    """{case: (argv after 'python', working directory)} of the user commands that must fail in one line."""
    root, name = w['root'], w['name']
    test_py, train_py = (os.path.join(ROOT, 'cfsrdelta_arch', f) for f in ('test.py', 'train.py'))
    cmds = {}
    for entry, script in (('test', [test_py]), ('train', [train_py]), ('foreign', ['-c', FOREIGN])):
        path = root / f'payload_{entry}.yml'
        path.write_text(payload(root / f'marker_{entry}'))
        cmds[f'payload_{entry}'] = (script + ['-opt', str(path)], str(root))
    bad = good_test_options(w, name)
    bad['network_g']['type'] = 'CFRS'
    cmds['arch_typo'] = ([test_py, '-opt', write_options(root / 'arch_typo.yml', bad)], ROOT)
    bad = good_train_options(w, name)
    bad['train']['pixel_opt']['type'] = 'L1Los'
    cmds['loss_typo'] = ([train_py, '-opt', write_options(root / 'loss_typo.yml', bad)], ROOT)
    bad = good_test_options(w, name)
    bad['datasets']['test_1'] = paired('tiny', *w['undersized'])
    cmds['undersized_lr'] = ([test_py, '-opt', write_options(root / 'undersized_lr.yml', bad)], ROOT)
    bad = good_test_options(w, name)  # a x4 network and its LR data, given the x2 checkpoint
    bad.update(scale=4, datasets={'test_1': paired('tiny4', *write_tiny_dataset(str(root / 'x4'), 4, n=1), scale=4)})
    bad['network_g']['upscale'] = 4
    cmds['checkpoint_scale'] = ([test_py, '-opt', write_options(root / 'checkpoint_scale.yml', bad)], ROOT)
    tiny_hr = root / 'tiny_hr'
    tiny_hr.mkdir()
    cv2.imwrite(str(tiny_hr / 'ok.png'), np.zeros((16, 16, 3), np.uint8))
    cv2.imwrite(str(tiny_hr / 'sliver.png'), np.zeros((3, 40, 3), np.uint8))  # 3 rows: empty after x4 mod-crop
    cmds['small_hr'] = ([os.path.join(ROOT, 'scripts', 'make_benchmark_lr.py'), '--hr', str(tiny_hr),
                         '--out', str(root / 'bench_out'), '--scales', '2', '4'], ROOT)
    return cmds


@pytest.fixture(scope='module')
def runs(world):
    """{case: CompletedProcess} of :func:`commands`, run concurrently (one per CPU core); the results
    folder a failed test run may leave under the repository is removed afterwards."""
    def run(item):
        argv, cwd = item
        return forked_python.run(argv, cwd, checkout_env())
    cases = commands(world)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = dict(zip(cases, pool.map(run, cases.values())))
    yield done
    for top in ('results', 'experiments', 'tb_logger'):
        for path in glob.glob(os.path.join(ROOT, top, glob.escape(world['name']) + '*')):
            shutil.rmtree(path, ignore_errors=True)


def one_line_error(proc, *named):
    """The ``error:`` line of a failed run, after checking that it is the only one, ends stderr, names
    everything in ``named``, and that no traceback was printed."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0], output[-3000:]
    for text in named:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize('entry', ['test', 'train', 'foreign'])
def test_planted_payload_runs_nothing(runs, world, entry):
    one_line_error(runs[f'payload_{entry}'], f'payload_{entry}.yml:3:6', 'python/object/apply:builtins.open')
    assert 'parsed' not in runs[f'payload_{entry}'].stdout
    assert not os.path.exists(world['root'] / f'marker_{entry}')


def test_the_payload_is_live_under_an_unsafe_loader(tmp_path):
    """Guard against a payload that would do nothing anyway: YAML's full loader does create the marker."""
    marker = tmp_path / 'control_marker'
    yaml.unsafe_load(payload(marker))
    assert marker.exists()


def test_basicsr_loader_is_safe_and_keeps_key_order(tmp_path):
    """BasicSR's own ``yaml.load(f, Loader=ordered_yaml()[0])`` (patched at import) refuses the tag and
    builds OrderedDicts in file order, as BasicSR's loader did."""
    from basicsr.utils.options import ordered_yaml
    marker = tmp_path / 'marker'
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load(payload(marker), Loader=ordered_yaml()[0])
    assert not marker.exists()
    loaded = yaml.load('b: 1\na: {d: 2, c: [3]}\n', Loader=ordered_yaml()[0])
    assert isinstance(loaded['a'], OrderedDict) and list(loaded) == ['b', 'a'] and list(loaded['a']) == ['d', 'c']


def test_arch_typo_suggests_the_registered_name(runs):
    one_line_error(runs['arch_typo'], 'arch_typo.yml', 'network_g', "'CFRS'", "did you mean 'CFSR'?")
    assert 'is not found, use name' not in runs['arch_typo'].stdout + runs['arch_typo'].stderr  # BasicSR's stray print


def test_loss_typo_stops_training_before_it_starts(runs, world):
    one_line_error(runs['loss_typo'], 'loss_typo.yml', 'train.pixel_opt', "did you mean 'L1Loss'?")
    assert not os.path.exists(os.path.join(ROOT, 'experiments', world['name']))  # nothing was created


def test_undersized_lr_fails_instead_of_scoring(runs, world):
    hr, lr = world['undersized']
    one_line_error(runs['undersized_lr'], 'undersized_lr.yml', os.path.join(lr, 'img0x2.png'),
                   os.path.join(hr, 'img0.png'), 'is 12x12', 'is 48x48', 'must be 24x24')
    assert 'psnr' not in (runs['undersized_lr'].stdout + runs['undersized_lr'].stderr).lower()


def test_checkpoint_of_another_scale_is_one_line(runs, world):
    one_line_error(runs['checkpoint_scale'], world['ckpt'], 'checkpoint is a x2 CFSR', 'built for x4')


def test_make_benchmark_lr_names_an_hr_smaller_than_the_scale(runs, world):
    one_line_error(runs['small_hr'], 'sliver.png', 'is 40x3', 'scale 4')
    assert not os.path.exists(world['root'] / 'bench_out')  # checked before anything is written


# ----------------------------------------------------------------------------- the checks, in process

def check(tmp_path, opt, is_train=False, extra=()):
    """``check_command_line`` on ``opt`` written to a file, as train.py/test.py run it."""
    return check_command_line(is_train, ['-opt', write_options(tmp_path / 'opt.yml', opt), *extra])


DROP = object()


def edited(opt, edits, w):
    """A copy of ``opt`` with {dotted key: value} applied: DROP removes the key, a callable gets the world."""
    opt = copy.deepcopy(opt)
    for dotted, value in edits.items():
        *parents, last = dotted.split('.')
        section = opt
        for key in parents:
            section = section[key]
        if value is DROP:
            del section[last]
        else:
            section[last] = value(w) if callable(value) else value
    return opt


def tiny_set(variant, name='tiny'):
    return lambda w: paired(name, *w[variant])


def world_path(key, index=None):
    return lambda w: w[key] if index is None else w[key][index]


# (id, training?, {dotted key: new value or DROP}, error type, fragments the one-line message must name)
MISTAKES = [
    ('model_typo', False, {'model_type': 'TTASRModle'}, OptionFileError, ['model_type', "did you mean 'TTASRModel'"]),
    ('nested_arch_typo', True, {'network_g.backbone.type': 'CSFR'}, OptionFileError,
     ['network_g.backbone', "did you mean 'CFSR'"]),
    ('arch_option_typo', False, {'network_g.upscal': 2}, OptionFileError, ["'upscal'", "did you mean 'upscale'"]),
    ('arch_option_missing', True, {'network_g.refiner': DROP}, OptionFileError, ['network_g', "'refiner'"]),
    ('dataset_typo', False, {'datasets.test_1.type': 'PairedImageDatset'}, OptionFileError,
     ['datasets.test_1', "did you mean 'PairedImageDataset'"]),
    ('metric_typo', False, {'val.metrics.psnr.type': 'calculate_pnsr'}, OptionFileError,
     ['val.metrics.psnr', "did you mean 'calculate_psnr'"]),
    ('no_network', False, {'network_g': DROP}, OptionFileError, ['missing key network_g']),
    ('no_datasets', True, {'datasets': DROP}, OptionFileError, ['missing key datasets']),
    ('no_dataset_type', False, {'datasets.test_1.type': DROP}, OptionFileError, ['missing key datasets.test_1.type']),
    ('no_dataroot_gt', False, {'datasets.test_1.dataroot_gt': DROP}, OptionFileError,
     ['missing key datasets.test_1.dataroot_gt']),
    ('optimizer_typo', True, {'train.optim_g.type': 'AdamWW'}, OptionFileError,
     ['train.optim_g', "optimizer type 'AdamWW'", "did you mean 'AdamW'"]),
    ('optimizer_option_typo', True, {'train.optim_g.betaz': [0.9, 0.99]}, OptionFileError,
     ['train.optim_g (Adam)', "'betaz'", "did you mean 'betas'"]),
    ('scheduler_typo', True, {'train.scheduler.type': 'CosineAnnealingLR'}, OptionFileError,
     ['train.scheduler', "did you mean 'CosineAnnealingRestartLR'"]),
    ('scheduler_option_missing', True, {'train.scheduler.milestones': DROP}, OptionFileError,
     ['train.scheduler (MultiStepLR)', "'milestones'"]),
    ('lr_as_text', True, {'train.optim_g.lr': '5e-5'}, OptionFileError,  # PyYAML: 5e-5 without a dot is a string
     ['train.optim_g.lr', "the text '5e-5'", '!!float 5e-5']),
    ('scheduler_number_as_text', True, {'train.scheduler.gamma': '1e-1'}, OptionFileError,
     ['train.scheduler.gamma', "the text '1e-1'", 'write 0.1']),
    ('milestone_as_text', True, {'train.scheduler.milestones': ['2e5']}, OptionFileError,  # the rate would never decay
     ['train.scheduler.milestones[0]', "the text '2e5'", 'write 200000']),
    ('total_iter_as_text', True, {'train.total_iter': '1e4'}, OptionFileError,  # --force_yml train:total_iter=1e4
     ['train.total_iter', "the text '1e4'", 'write 10000']),
    ('loss_weight_as_text', True, {'train.pixel_opt.loss_weight': '1e-2'}, OptionFileError,
     ['train.pixel_opt.loss_weight', "the text '1e-2'", 'write 0.01']),
    ('fixed_params_typo', True, {'train.fixed_refiner_params': ['body.0', 'bodi']}, OptionFileError,
     ['train.fixed_refiner_params', "'bodi' names no trainable parameter of LRRefineNet; did you mean 'body'?"]),
    ('fixed_params_all', True, {'train.fixed_refiner_params': ['body']}, OptionFileError,
     ['train.fixed_refiner_params', "['body'] leaves no parameter of LRRefineNet to train"]),
    ('fixed_params_other_model', True, {'train.fixed_refiner_params': ['body.0'], 'model_type': 'TTASRModel'},
     OptionFileError, ['train.fixed_refiner_params is read by BackboneDeltaModel', 'not by model_type TTASRModel']),
    ('fixed_params_not_a_list', True, {'train.fixed_refiner_params': 'body'}, OptionFileError,
     ['train.fixed_refiner_params must be a list of parameter names', "'body'"]),
    ('grow_not_a_bool', True, {'train.grow_pretrained_refiner': 'yes'}, OptionFileError,
     ['train.grow_pretrained_refiner must be true or false', "'yes'"]),
    ('grow_without_pretrain', True, {'train.grow_pretrained_refiner': True}, OptionFileError,
     ['train.grow_pretrained_refiner', 'true needs path.pretrain_network_g']),
    ('grow_other_model', True, {'train.grow_pretrained_refiner': True, 'model_type': 'TTASRModel'},
     OptionFileError, ['train.grow_pretrained_refiner is read by BackboneDeltaModel', 'not by model_type TTASRModel']),
    ('val_freq_as_text', True, {'val.val_freq': '5e3'}, OptionFileError, ['val.val_freq', "the text '5e3'"]),
    ('ema_decay_as_text', True, {'train.ema_decay': 'inf'}, OptionFileError,  # not 'write inf': YAML reads it as text
     ['train.ema_decay', "the text 'inf', not a number (write !!float inf)"]),
    ('no_total_iter', True, {'train.total_iter': DROP}, OptionFileError, ['missing key train.total_iter']),
    ('no_train_set', True, {'datasets.train': DROP}, OptionFileError, ['missing key datasets.train']),
    ('missing_lr_folder', False, {'datasets.test_1.dataroot_lq': '/nonexistent/LR'}, OptionFileError,
     ['datasets.test_1.dataroot_lq', '/nonexistent/LR']),
    ('missing_train_hr_folder', True, {'datasets.train.dataroot_gt': '/nonexistent/HR'}, OptionFileError,
     ['datasets.train.dataroot_gt', '/nonexistent/HR']),
    ('only_set_missing', False, {'datasets.test_1.dataroot_gt': '/nonexistent/HR'}, OptionFileError,
     ['none of the datasets exist', '/nonexistent/HR']),
    ('missing_pretrain', False, {'path.pretrain_network_g': '/nonexistent/net_g.pth'}, OptionFileError,
     ['path.pretrain_network_g', '/nonexistent/net_g.pth']),
    ('missing_backbone_weights', True, {'network_g.backbone_weights': '/nonexistent/CFSR_x2.pth'}, OptionFileError,
     ['network_g.backbone_weights', '/nonexistent/CFSR_x2.pth']),
    ('missing_clean_weights', True, {'network_g.refiner': {'type': 'NonBlindRefineNet', 'upscale': 2,
                                                           'clean_weights': '/nonexistent/clean.pth'}},
     OptionFileError, ['network_g.refiner.clean_weights', '/nonexistent/clean.pth']),
    ('scale_vs_upscale', False, {'scale': 4}, OptionFileError, ['network_g.upscale is 2 but scale is 4']),
    ('scale_vs_refiner', True, {'network_g.refiner.upscale': 3}, OptionFileError,
     ['network_g.refiner.upscale is 3 but scale is 2']),
    ('unpaired_names', False, {'datasets.test_1': tiny_set('unpaired')}, DatasetError,
     ['datasets.test_1 (tiny)', 'HR img1.png has no LR img1x2.png']),
    ('undersized_lr', False, {'datasets.test_1': tiny_set('undersized')}, DatasetError,
     ['img0x2.png is 12x12', 'must be 24x24']),
    ('uneven_hr_in_training', True, {'datasets.train.type': 'PairedImageDataset',
                                     'datasets.train.dataroot_gt': world_path('uneven', 0)},
     DatasetError, ['datasets.train', 'HR exactly scale x LR']),
    ('patch_larger_than_lr', True, {'datasets.train.gt_size': 64}, DatasetError,
     ['smaller than the training patch gt_size / scale = 32']),
    ('stale_sr_base', True, {'datasets.train.dataroot_base': world_path('bad_base')}, DatasetError,
     ['datasets.train (tiny_train)', 'SR_base', 'img1.png is 96x96', 'expected 48x48']),
    ('lmdb_without_meta_info', False, {'datasets.test_1.dataroot_gt': world_path('lmdb_hr'),
                                       'datasets.test_1.dataroot_lq': world_path('lmdb_no_meta'),
                                       'datasets.test_1.io_backend.type': 'lmdb'},
     DatasetError, ['no_meta.lmdb/meta_info.txt is missing']),
]


@pytest.mark.parametrize('case,is_train,edits,error,named', MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_is_one_line_naming_the_file_and_key(tmp_path, world, case, is_train, edits, error, named):
    opt = edited(good_train_options(world) if is_train else good_test_options(world), edits, world)
    with pytest.raises(error) as info:
        check(tmp_path, opt, is_train)
    message = str(info.value)
    assert '\n' not in message and message.startswith(str(tmp_path / 'opt.yml') + ': ')
    for text in named:
        assert text in message, message


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / 'broken.yml'
    path.write_text('name: x\ndatasets:\n  test_1: [a, b\n')
    with pytest.raises(OptionFileError, match=f'^{path}:4:1: invalid YAML'):
        check_command_line(False, ['-opt', str(path)])
    path.write_text('')
    with pytest.raises(OptionFileError, match='the file must be a mapping of options, found NoneType'):
        check_command_line(False, ['-opt', str(path)])


GOOD = {
    'test options': (False, {}),
    'training options (cached SR_base, paired validation)': (True, {}),
    'HR not a multiple of the scale, LR = HR // scale': (False, {'datasets.test_1': tiny_set('uneven')}),
    'LMDB with meta_info.txt': (False, {'datasets.test_1.dataroot_gt': world_path('lmdb_hr'),
                                        'datasets.test_1.dataroot_lq': world_path('lmdb_lr'),
                                        'datasets.test_1.io_backend.type': 'lmdb'}),
    'a refiner module kept fixed': (True, {'train.fixed_refiner_params': ['body.0']}),
    "BasicSR's '<name>_basicsr' registry fallback": (False, {'network_g': {'type': 'SRVGGNetCompact', 'upscale': 2}}),
}


@pytest.mark.parametrize('case', GOOD)
def test_good_options_pass(tmp_path, world, case):
    is_train, edits = GOOD[case]
    opt = edited(good_train_options(world) if is_train else good_test_options(world), edits, world)
    assert check(tmp_path, opt, is_train) == {}


def test_missing_benchmark_is_skipped_when_another_exists(tmp_path, world):
    opt = good_test_options(world)
    opt['datasets']['test_2'] = paired('absent', '/nonexistent/HR', world['lr'])
    assert check(tmp_path, opt) == {'test_2': 'missing /nonexistent/HR'}


def test_force_yml_overrides_are_checked(tmp_path, world):
    opt = good_test_options(world)
    assert check(tmp_path, opt, extra=['--force_yml', 'path:pretrain_network_g=none']) == {}  # BasicSR: None
    with pytest.raises(OptionFileError, match='path.pretrain_network_g: checkpoint not found: /nonexistent.pth'):
        check(tmp_path, opt, extra=['--force_yml', 'path:pretrain_network_g=/nonexistent.pth'])


def stand_in_files(opt, w, root):
    """The option file with its data and weights replaced by tiny stand-ins of the same layout."""
    scale = opt['scale']
    hr, lr = write_tiny_dataset(str(root / f'x{scale}'), scale, n=1, size=192)  # >= every gt_size in options/
    base = str(root / f'x{scale}' / 'HR')  # an SR_base is scale x LR, like the mod-cropped HR
    lmdb = {'gt': write_fake_lmdb(str(root / f'hr{scale}.lmdb'), {'img0': (192, 192)}),
            'lq': write_fake_lmdb(str(root / f'lr{scale}.lmdb'), {'img0': (192 // scale,) * 2}),
            'base': write_fake_lmdb(str(root / f'base{scale}.lmdb'), {'img0': (192, 192)})}
    for dataset in opt['datasets'].values():
        folders = lmdb if dataset['io_backend']['type'] == 'lmdb' else {'gt': hr, 'lq': lr, 'base': base}
        for kind, folder in folders.items():
            if f'dataroot_{kind}' in dataset:
                dataset[f'dataroot_{kind}'] = folder
        if dataset['type'] == 'DegradedPairedDataset':  # its real LR names are the HR stems
            dataset['filename_tmpl'] = f'{{}}x{scale}'
    if opt['path'].get('pretrain_network_g'):
        opt['path']['pretrain_network_g'] = w['ckpt']
    if opt['network_g'].get('backbone_weights'):
        opt['network_g']['backbone_weights'] = w['ckpt']
    return opt


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(ROOT, 'options', '*', '*.yml'))),
                         ids=lambda p: os.path.relpath(p, os.path.join(ROOT, 'options')))
def test_the_repository_option_files_pass(tmp_path, world, path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    opt = stand_in_files(opt, world, tmp_path)
    assert check(tmp_path, opt, is_train=os.path.basename(os.path.dirname(path)) == 'train') == {}


@pytest.mark.parametrize('kind,reason', [('empty_ckpt', 'empty file'),
                                         ('truncated_ckpt', 'PytorchStreamReader failed reading zip archive'),
                                         ('text_ckpt', 'not a readable PyTorch checkpoint'),
                                         ('list_ckpt', 'expected a state dict, found list')])
def test_unreadable_checkpoint_is_one_line_naming_it(world, kind, reason):
    with pytest.raises(CheckpointError) as info:
        load_state_dict_file(world[kind])
    message = str(info.value)
    assert '\n' not in message and message.startswith(world[kind] + ': ') and reason in message
    assert set(load_state_dict_file(world['ckpt'])) == set(CFSR(embed_dim=8, depths=(1,), upscale=SCALE).state_dict())


def test_debug_shows_the_traceback_instead(tmp_path, monkeypatch):
    def main(root_path):
        raise OptionFileError('x.yml: missing key name')
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', 'x.yml'])
    with pytest.raises(SystemExit, match='^error: x.yml: missing key name$'):
        run_cli(main, str(tmp_path))
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', 'x.yml', '--debug'])
    with pytest.raises(OptionFileError):
        run_cli(main, str(tmp_path))
