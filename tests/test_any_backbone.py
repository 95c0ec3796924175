"""Any registered SR network works as the frozen backbone of BackboneDelta; LESRCNN matches its release.

- A few BackboneDeltaModel training iterations (built through ``basicsr.models.build_model``) with tiny
  configs of CFSR, LESRCNN and BasicSR's own EDSR, MSRResNet, RRDBNet and SwinIR: the backbone
  stays bit-identical, the refiner changes.
- LESRCNN: the official x2/x3/x4 files load strictly, parameter counts, one-line errors, and
  Set5 x4 PSNR within 0.005 dB of ../shared/docs/reference_tables.md.
"""
import os

import numpy as np
import pytest
import torch
from basicsr.models import build_model
from torch.nn import functional as F

from cfsrdelta_arch.archs.lesrcnn_arch import LESRCNN
from cfsrdelta_arch.utils.inference import padded_forward
from cfsrdelta_arch.utils.weights import CheckpointError, load_weights
from conftest import TINY_CFSR, clone_state, official_weights, require_shared

SCALE = TINY_CFSR['upscale']
LR_SIZE = 10  # training patches: not a multiple of SwinIR's window (4)
TEST_SIZE = (9, 7)  # odd: RRDBNet x2 pixel-unshuffles its input by 2

# Tiny backbone configs (x2) and BackboneDelta's backbone_pad_multiple for each: BasicSR 1.4.2's SwinIR
# needs LR sizes divisible by its window_size, RRDBNet at x2 (and x1) sizes divisible by 2 (4); neither
# pads by itself.
BACKBONES = {
    'CFSR': (TINY_CFSR, 1),
    'LESRCNN': (dict(type='LESRCNN', upscale=SCALE, num_feat=8), 1),
    'EDSR': (dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=SCALE,
                  img_range=255.), 1),
    'MSRResNet': (dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=SCALE), 1),
    'RRDBNet': (dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=SCALE, num_feat=8, num_block=1,
                     num_grow_ch=4), 2),
    'SwinIR': (dict(type='SwinIR', upscale=SCALE, img_size=16, window_size=4, embed_dim=12, depths=[1],
                    num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect'), 4),
}


def delta_options(tmp_path, backbone, pad_multiple, total_iter=3):
    """A complete training option dict for BackboneDeltaModel on the CPU, all paths under tmp_path."""
    root = str(tmp_path)
    return {
        'name': 'any_backbone', 'model_type': 'BackboneDeltaModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1,
        'network_g': {
            'type': 'BackboneDelta', 'backbone': backbone, 'backbone_pad_multiple': pad_multiple,
            'refiner': {'type': 'LRRefineNet', 'upscale': SCALE, 'width': 8, 'num_convs': 2, 'init_std': 1e-3},
        },
        'path': {
            'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
            'experiments_root': root, 'models': os.path.join(root, 'models'),
            'training_states': os.path.join(root, 'training_states'), 'log': root,
            'visualization': os.path.join(root, 'visualization'),
        },
        'train': {
            'ema_decay': 0, 'total_iter': total_iter, 'warmup_iter': -1,
            'optim_g': {'type': 'Adam', 'lr': 1e-2, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [total_iter], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': total_iter, 'use_tb_logger': False},
    }


@pytest.mark.parametrize('name', list(BACKBONES))
def test_delta_training_freezes_any_backbone(name, tmp_path):
    backbone_opt, pad_multiple = BACKBONES[name]
    total_iter = 3
    model = build_model(delta_options(tmp_path, backbone_opt, pad_multiple, total_iter))
    net = model.get_bare_model(model.net_g)
    assert not any(p.requires_grad for p in net.backbone.parameters())
    backbone_before, refiner_before = clone_state(net.backbone), clone_state(net.refiner)

    torch.manual_seed(0)
    lq = torch.rand(2, 3, LR_SIZE, LR_SIZE)
    gt = F.interpolate(lq, scale_factor=SCALE, mode='bicubic', align_corners=False).clamp(0, 1)
    for it in range(1, total_iter + 1):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(it)
    assert model.output.shape == (2, 3, SCALE * LR_SIZE, SCALE * LR_SIZE)
    assert np.isfinite(model.log_dict['l_pix'])
    assert not net.backbone.training and net.refiner.training

    backbone_after, refiner_after = clone_state(net.backbone), clone_state(net.refiner)
    assert all(torch.equal(backbone_before[k], backbone_after[k]) for k in backbone_before), \
        f'{name} backbone changed during delta training'
    assert any(not torch.equal(refiner_before[k], refiner_after[k]) for k in refiner_before), \
        f'{name} refiner did not change'

    model.feed_data({'lq': torch.rand(1, 3, *TEST_SIZE)})  # inference at an odd size
    model.test()
    assert model.output.shape == (1, 3, SCALE * TEST_SIZE[0], SCALE * TEST_SIZE[1])

    os.makedirs(model.opt['path']['models'])
    os.makedirs(model.opt['path']['training_states'])
    model.save(epoch=0, current_iter=total_iter)  # refiner-only checkpoint
    saved = torch.load(os.path.join(tmp_path, 'models', f'net_g_{total_iter}.pth'), weights_only=True)['params']
    assert set(saved) == set(refiner_after)


def test_padded_forward_crops_back_to_the_true_size():
    """Padding to a multiple never leaks into the kept region of a pixel-local network."""
    def nearest_x2(t):
        return F.interpolate(t, scale_factor=2, mode='nearest')

    for size in [(10, 7), (3, 2), (8, 8)]:
        x = torch.rand(1, 3, *size)
        assert torch.equal(padded_forward(nearest_x2, x, 4), nearest_x2(x))


# ----------------------------------------------------------------------------------------- LESRCNN

LESRCNN_PARAMS = {2: 626_328, 3: 810_968, 4: 774_040}  # every tensor of the release, mean shifters included


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_lesrcnn_parameter_count(scale):
    net = LESRCNN(upscale=scale)
    assert sum(v.numel() for v in net.state_dict().values()) == LESRCNN_PARAMS[scale]
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert sorted(frozen) == ['add_mean.shifter.bias', 'add_mean.shifter.weight',
                              'sub_mean.shifter.bias', 'sub_mean.shifter.weight']


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_lesrcnn_official_weights_load_strictly(scale):
    path = official_weights(f'LESRCNN_x{scale}.pth')
    net = load_weights(LESRCNN(upscale=scale), path, param_key=None)  # plain state dict, no 'params'
    release = torch.load(path, map_location='cpu', weights_only=True)
    own = net.state_dict()
    assert list(own) == list(release)  # same names, same order
    assert all(torch.equal(own[k], release[k]) for k in release)
    assert net(torch.rand(1, 3, 6, 5)).shape == (1, 3, 6 * scale, 5 * scale)


@pytest.mark.parametrize('built, other', [(2, 4), (4, 2), (3, 2), (2, 3)])
def test_lesrcnn_wrong_scale_is_one_line(built, other):
    with pytest.raises(CheckpointError) as info:
        load_weights(LESRCNN(upscale=built), official_weights(f'LESRCNN_x{other}.pth'), param_key=None)
    msg = str(info.value)
    assert '\n' not in msg and f'x{other} LESRCNN' in msg and f'upscale: {other}' in msg


def test_lesrcnn_other_network_is_one_line():
    with pytest.raises(CheckpointError) as info:
        load_weights(LESRCNN(upscale=4), official_weights('CFSR_x4.pth'))
    path = official_weights('CFSR_x4.pth')
    assert str(info.value).startswith(f'{path}: not a LESRCNN checkpoint') and '\n' not in str(info.value)


def test_lesrcnn_set5_x4_matches_reference():
    """Set5 x4 under the protocol (LR made here, MATLAB-compatible bicubic): 31.9268 dB +- 0.005."""
    from basicsr.metrics import calculate_psnr

    from cfsrdelta_arch.data.lr_generation import bicubic_downsample, list_images, mod_crop, read_image_color
    from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image

    scale = 4
    hr_dir = require_shared('datasets', 'benchmark', 'Set5', 'HR')
    net = load_weights(LESRCNN(upscale=scale), official_weights('LESRCNN_x4.pth'), param_key=None).eval()
    psnrs = []
    for path in list_images(hr_dir):
        hr = mod_crop(read_image_color(path), scale)
        lr = bicubic_downsample(hr, scale)
        with torch.no_grad():
            sr = tensor_to_image(net(image_to_tensor(lr, bgr=True)), bgr=True)
        psnrs.append(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True))
    assert len(psnrs) == 5
    assert abs(np.mean(psnrs) - 31.9268) < 0.005, f'LESRCNN x4 Set5 PSNR {np.mean(psnrs):.4f}'
