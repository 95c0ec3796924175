"""The plugin in someone else's BasicSR project: ``import cfsrdelta_arch`` is all it takes.

A minimal separate project is written to a temporary folder: its own ``train.py``/``test.py`` that
call BasicSR's own ``train_pipeline``/``test_pipeline`` after ``import cfsrdelta_arch``, its own
option files naming ``type: CFSR`` (tiny; trained with BasicSR's SRModel, tested with the plugin's
TTASRModel), and tiny generated data.
Training, an auto-resume of that training (CPU, ``num_gpu: 0``) and testing run in processes of their
own (tests/forked_python.py) with the project as working directory and only the repository root on
PYTHONPATH. The PSNR values they log are compared with the PSNR of the saved checkpoints computed here.
"""
import glob
import os
import re

import forked_python
import pytest
import torch
from basicsr.metrics import calculate_psnr

from conftest import TINY_CFSR, checkout_env, write_tiny_dataset
from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
from cfsrdelta_arch.data.lr_generation import read_image_color
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.utils.weights import load_weights

SCALE = TINY_CFSR['upscale']
TRAIN_NAME = 'foreign_cfsr_x2'
TEST_NAME = 'foreign_cfsr_x2_test'

ENTRY_POINT = '''\
"""Foreign project's {stage} entry point: BasicSR's own pipeline, with the CFSR-Delta plugin registered."""
import os.path as osp

import cfsrdelta_arch  # noqa: F401  (registers CFSR, TTASRModel, ...; must precede basicsr)
from basicsr.{stage} import {stage}_pipeline

if __name__ == '__main__':
    {stage}_pipeline(osp.dirname(osp.abspath(__file__)))
'''

NETWORK = f'''\
network_g:
  type: CFSR
  upscale: {SCALE}
  embed_dim: {TINY_CFSR['embed_dim']}
  depths: {TINY_CFSR['depths']}
'''

METRICS = f'''\
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: {SCALE}
      test_y_channel: true
'''

# The tiny val images as a dataset block: validation in training, the test set in testing.
VAL_SET = f'''\
    name: tiny_val
    type: PairedImageDataset
    dataroot_gt: datasets/val/HR
    dataroot_lq: datasets/val/LR_bicubic/X{SCALE}
    filename_tmpl: '{{}}x{SCALE}'
    io_backend:
      type: disk
'''

TRAIN_YML = f'''\
name: {TRAIN_NAME}
model_type: SRModel  # BasicSR's own model; only the arch comes from the plugin
scale: {SCALE}
num_gpu: 0
manual_seed: 0

datasets:
  train:
    name: tiny_train
    type: PairedImageDataset
    dataroot_gt: datasets/train/HR
    dataroot_lq: datasets/train/LR_bicubic/X{SCALE}
    filename_tmpl: '{{}}x{SCALE}'
    io_backend:
      type: disk
    gt_size: 32
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
  val:
{VAL_SET}
{NETWORK}
path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~

train:
  ema_decay: 0
  optim_g:
    type: Adam
    lr: !!float 1e-3
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [100]
    gamma: 0.5
  total_iter: 4
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean

val:
  val_freq: 2
  save_img: false
{METRICS}
logger:
  print_freq: 1
  save_checkpoint_freq: 2
  use_tb_logger: false
  wandb:
    project: ~
    resume_id: ~
'''

TEST_YML = f'''\
name: {TEST_NAME}
model_type: TTASRModel
scale: {SCALE}
num_gpu: 0
manual_seed: 0

datasets:
  test_1:
{VAL_SET}
{NETWORK}
path:
  pretrain_network_g: experiments/{TRAIN_NAME}/models/net_g_latest.pth
  param_key_g: params
  strict_load_g: true

val:
  save_img: true
  suffix: ~
{METRICS}'''


def run_in(project, *args):
    """Run ``python <args>`` in ``project`` with only the repository root added to PYTHONPATH, in a
    process of its own (tests/forked_python.py)."""
    proc = forked_python.run(args, project, checkout_env(), timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(args)} exited {proc.returncode}:\n{output[-4000:]}'
    return output


def logged_psnrs(output):
    """The validation PSNRs a BasicSR run logged, in order."""
    return [float(v) for v in re.findall(r'# psnr: (\d+\.\d+)', output)]


def psnr_of(project, checkpoint):
    """Mean Y-PSNR (crop = scale) on the project's val images of the tiny CFSR with the weights of
    ``checkpoint`` (relative to the project), computed in this process."""
    net = load_weights(build_from_options(TINY_CFSR), os.path.join(project, checkpoint)).eval()
    val = os.path.join(project, 'datasets', 'val')
    values = []
    for name in sorted(os.listdir(os.path.join(val, 'HR'))):
        lr = read_image_color(os.path.join(val, 'LR_bicubic', f'X{SCALE}', name.replace('.png', f'x{SCALE}.png')))
        with torch.no_grad():
            sr = tensor_to_image(net(image_to_tensor(lr, bgr=True)), bgr=True)
        values.append(calculate_psnr(sr, read_image_color(os.path.join(val, 'HR', name)), crop_border=SCALE,
                                     test_y_channel=True))
    assert len(values) == 2
    return sum(values) / len(values)


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """The foreign project: entry points, option files, tiny data (4 train images = 2 iterations per epoch
    at batch 2, so iteration counts are exact; 2 val images)."""
    root = tmp_path_factory.mktemp('foreign_project')
    for stage in ('train', 'test'):
        (root / f'{stage}.py').write_text(ENTRY_POINT.format(stage=stage))
    (root / 'options').mkdir()
    (root / 'options' / 'train.yml').write_text(TRAIN_YML)
    (root / 'options' / 'test.yml').write_text(TEST_YML)
    write_tiny_dataset(str(root / 'datasets' / 'train'), SCALE, n=4, size=48, seed=1)
    write_tiny_dataset(str(root / 'datasets' / 'val'), SCALE, n=2, size=40, seed=2)
    return str(root)


@pytest.fixture(scope='module')
def trained(project):
    """Output of a 4-iteration training run through the project's own train.py."""
    return run_in(project, 'train.py', '-opt', 'options/train.yml')


def test_training_writes_checkpoints(project, trained):
    exp = os.path.join(project, 'experiments', TRAIN_NAME)
    for name in ('net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth'):
        assert os.path.isfile(os.path.join(exp, 'models', name)), name
    assert os.path.isfile(os.path.join(exp, 'training_states', '4.state'))
    assert 'End of training' in trained
    # validations at iterations 2 and 4, and once more after training (the iteration-4 weights)
    models = f'experiments/{TRAIN_NAME}/models'
    expected = [psnr_of(project, f'{models}/net_g_{it}.pth') for it in (2, 4, 4)]
    assert expected[0] != expected[1]  # training changed the network: the values tell the checkpoints apart
    assert logged_psnrs(trained) == pytest.approx(expected, abs=1e-4)  # logged with 4 decimals


def test_auto_resume_on_cpu(project, trained):
    """BasicSR's own train_pipeline resumes a CPU run (the plugin makes load_resume_state CPU-safe)."""
    out = run_in(project, 'train.py', '-opt', 'options/train.yml', '--auto_resume',
                 '--force_yml', 'train:total_iter=6')
    exp = os.path.join(project, 'experiments', TRAIN_NAME)
    assert 'Resuming training from epoch' in out and 'iter: 4' in out
    assert os.path.isfile(os.path.join(exp, 'models', 'net_g_6.pth'))
    assert os.path.isfile(os.path.join(exp, 'training_states', '6.state'))


def test_testing_writes_results(project, trained):
    out = run_in(project, 'test.py', '-opt', 'options/test.yml')
    images = glob.glob(os.path.join(project, 'results', TEST_NAME, 'visualization', 'tiny_val', '*.png'))
    assert len(images) == 2
    assert 'Model [TTASRModel] is created' in out
    expected = psnr_of(project, f'experiments/{TRAIN_NAME}/models/net_g_latest.pth')
    assert logged_psnrs(out) == pytest.approx([expected], abs=1e-4)

