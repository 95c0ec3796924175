"""BackboneDeltaModel and TTASRModel built by BasicSR from option dicts (CPU, tiny networks)."""
import copy
import json
import os
import random

import numpy as np
import pytest
import torch
from basicsr.models import build_model

from cfsrdelta_arch.app.resume import load_checked
from cfsrdelta_arch.archs.cfsr_arch import CFSR
from cfsrdelta_arch.models.backbone_delta_model import BackboneDeltaModel
from cfsrdelta_arch.models.ttasr_model import EarlyStopping, TTASRModel
from cfsrdelta_arch.utils.fileio import OptionFileError
from cfsrdelta_arch.utils.inference import self_ensemble
from conftest import TINY_CFSR, clone_state

SCALE = 2


@pytest.fixture
def backbone_file(tmp_path):
    """A tiny random CFSR x2 saved as a BasicSR checkpoint ({'params': ...}); returns (path, state)."""
    torch.manual_seed(0)
    net = CFSR(embed_dim=8, depths=(1,), upscale=SCALE)
    with torch.no_grad():  # make the blocks matter (released init is 1e-6)
        for name, p in net.named_parameters():
            if 'layer_scale' in name:
                p.fill_(0.5)
    path = tmp_path / 'tiny_cfsr_x2.pth'
    torch.save({'params': net.state_dict()}, path)
    return str(path), copy.deepcopy(net.state_dict())


def delta_opt(tmp_path, backbone_path, is_train=True, pretrain_g=None, ema_decay=0):
    root = tmp_path / 'exp'
    paths = {k: str(root / k) for k in ('models', 'training_states', 'log', 'visualization')}
    for p in paths.values():
        os.makedirs(p, exist_ok=True)
    return {
        'name': 'tiny', 'model_type': 'BackboneDeltaModel', 'scale': SCALE, 'is_train': is_train,
        'dist': False, 'num_gpu': 0, 'rank': 0, 'world_size': 1,
        'network_g': {'type': 'BackboneDelta', 'backbone': dict(TINY_CFSR),
                      'refiner': {'type': 'LRRefineNet', 'upscale': SCALE, 'width': 8, 'num_convs': 3},
                      'backbone_weights': backbone_path},
        'path': {'experiments_root': str(root), **paths,
                 'pretrain_network_g': pretrain_g, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': ema_decay, 'optim_g': {'type': 'Adam', 'lr': 1e-2},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': 10, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1FFTLoss', 'fft_weight': 0.005, 'ramp_iters': 2}},
        'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE}}},
    }


def batch(seed=0, n=2, h=12, w=10):
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(n, 3, h, w, generator=g), 'gt': torch.rand(n, 3, h * SCALE, w * SCALE, generator=g)}


def train_steps(model, steps=4):
    for it in range(1, steps + 1):
        model.feed_data(batch(it))
        model.optimize_parameters(it)


def graph_leaves(tensor):
    """Tensors that autograd would accumulate gradients into, reachable from ``tensor.grad_fn``."""
    leaves, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, 'variable'):
            leaves.add(id(fn.variable))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


# ---- BackboneDeltaModel -------------------------------------------------------------------------------

def test_backbone_is_loaded_frozen_and_unchanged_by_training(tmp_path, backbone_file):
    path, saved = backbone_file
    model = build_model(delta_opt(tmp_path, path))
    assert isinstance(model, BackboneDeltaModel)
    net = model.net_g
    backbone_before = clone_state(net.backbone)
    assert all(torch.equal(backbone_before[k], saved[k]) for k in saved)  # loaded from the file
    refiner_before = clone_state(net.refiner)
    assert all(not p.requires_grad for p in net.backbone.parameters())
    # The optimiser holds exactly the refiner's parameters.
    optimised = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert optimised == {id(p) for p in net.refiner.parameters()}

    train_steps(model)
    after = net.backbone.state_dict()
    assert all(torch.equal(after[k], backbone_before[k]) for k in backbone_before)
    changed = [k for k, v in net.refiner.state_dict().items() if not torch.equal(v, refiner_before[k])]
    assert changed == list(refiner_before)  # every refiner tensor moved


@pytest.mark.parametrize('losses', [{'perceptual_opt': {'type': 'PerceptualLoss'}},
                                    {'pixel_opt': None, 'perceptual_opt': {'type': 'PerceptualLoss'}},
                                    {'pixel_opt': None}], ids=['beside_pixel', 'alone', 'none'])
def test_delta_training_refuses_losses_it_would_not_apply(tmp_path, backbone_file, losses):
    """The delta's step applies train.pixel_opt only: a perceptual loss would be silently ignored
    beside it, and alone would fail mid-step; both are one line before anything is built."""
    opt = delta_opt(tmp_path, backbone_file[0])
    opt['train'].update(losses)
    with pytest.raises(OptionFileError, match='BackboneDeltaModel trains with train.pixel_opt alone'):
        build_model(opt)


def test_backbone_stays_in_eval_mode(tmp_path, backbone_file):
    model = build_model(delta_opt(tmp_path, backbone_file[0]))
    model.net_g.train()
    assert model.net_g.refiner.training
    assert not any(m.training for m in model.net_g.backbone.modules())
    model.net_g.eval()
    model.net_g.train(True)
    assert not model.net_g.backbone.training


def test_output_graph_excludes_backbone(tmp_path, backbone_file):
    model = build_model(delta_opt(tmp_path, backbone_file[0]))
    out = model.net_g(batch()['lq'])
    leaves = graph_leaves(out)
    assert {id(p) for p in model.net_g.refiner.parameters()} <= leaves
    assert not leaves & {id(p) for p in model.net_g.backbone.parameters()}


def test_ema_copy_keeps_the_backbone_bit_identical(tmp_path, backbone_file):
    model = build_model(delta_opt(tmp_path, backbone_file[0], ema_decay=0.999))
    before = clone_state(model.net_g_ema.backbone)
    refiner_before = clone_state(model.net_g_ema.refiner)
    train_steps(model)
    after = model.net_g_ema.backbone.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert any(not torch.equal(v, refiner_before[k]) for k, v in model.net_g_ema.refiner.state_dict().items())


def test_cached_base_skips_the_backbone(tmp_path, backbone_file):
    model = build_model(delta_opt(tmp_path, backbone_file[0]))
    data = batch()
    data['base'] = torch.rand_like(data['gt'])  # deliberately not the backbone's output
    model.feed_data(data)
    model.test()
    with torch.no_grad():
        expected = model.net_g.refiner(data['base'], data['lq'])
    assert torch.equal(model.output, expected)


def test_saved_checkpoint_holds_the_refiner_only_and_reloads(tmp_path, backbone_file):
    path = backbone_file[0]
    model = build_model(delta_opt(tmp_path, path))
    train_steps(model, 3)
    model.save(epoch=0, current_iter=3)
    ckpt_path = tmp_path / 'exp' / 'models' / 'net_g_3.pth'
    assert (tmp_path / 'exp' / 'training_states' / '3.state').is_file()
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
    assert list(ckpt) == ['params']
    refiner_state = model.net_g.refiner.state_dict()
    assert list(ckpt['params']) == list(refiner_state)
    assert all(torch.equal(ckpt['params'][k], v) for k, v in refiner_state.items())

    data = batch(seed=99)
    model.feed_data(data)
    model.test()
    reloaded = build_model(delta_opt(tmp_path / 'b', path, is_train=False, pretrain_g=str(ckpt_path)))
    reloaded.feed_data(data)
    reloaded.test()
    assert torch.equal(model.output, reloaded.output)
    # A fresh refiner gives a different output, so the equality above is due to the loaded weights.
    fresh = build_model(delta_opt(tmp_path / 'c', path, is_train=False))
    fresh.feed_data(data)
    fresh.test()
    assert not torch.equal(model.output, fresh.output)


# ---- TTASRModel: self-ensemble and tiling ---------------------------------------------------------

def tta_model(network_g, val):
    opt = {'name': 'tta', 'model_type': 'TTASRModel', 'scale': SCALE, 'is_train': False, 'dist': False,
           'num_gpu': 0, 'network_g': network_g, 'path': {'pretrain_network_g': None}, 'val': val}
    torch.manual_seed(0)
    model = build_model(opt)
    assert isinstance(model, TTASRModel)
    return model


def run_test(model, lq):
    model.feed_data({'lq': lq})
    model.test()
    return model.output


def dihedral_mean(net, x):
    """Mean over hflip x vflip x transpose of net(T(x)), mapped back; written independently of
    cfsrdelta_arch.utils.inference."""
    outs = []
    with torch.no_grad():
        for transpose in (False, True):
            for hflip in (False, True):
                for vflip in (False, True):
                    dims = [d for d, on in ((-1, hflip), (-2, vflip)) if on]
                    t = x.transpose(-2, -1) if transpose else x
                    t = t.flip(dims) if dims else t
                    y = net(t)
                    y = y.flip(dims) if dims else y
                    outs.append(y.transpose(-2, -1) if transpose else y)
    return torch.stack(outs).mean(0)


def test_self_ensemble_is_the_mean_over_8_transforms():
    model = tta_model(dict(TINY_CFSR), {'self_ensemble': True})
    lq = torch.rand(1, 3, 9, 13, generator=torch.Generator().manual_seed(3))  # non-square
    out = run_test(model, lq)
    net = model.net_g.eval()
    with torch.no_grad():
        plain = net(lq)
        library = self_ensemble(net, lq)
    assert out.shape == plain.shape
    assert torch.allclose(out, dihedral_mean(net, lq), atol=1e-6, rtol=0)
    assert torch.allclose(out, library, atol=1e-6, rtol=0)
    assert (out - plain).abs().max().item() > 1e-3  # the random network is not equivariant


# SRVGGNetCompact with num_conv=2: four 3x3 convs in LR space plus nearest upsampling of the input,
# i.e. a receptive radius of 4 LR pixels (RefineNet-sized).
SMALL_RF_NET = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_conv': 2,
                'upscale': SCALE, 'act_type': 'prelu'}
RADIUS = 4


@pytest.mark.parametrize('self_ensemble_on', [False, True])
def test_tiling_equals_whole_image_when_overlap_covers_receptive_field(self_ensemble_on):
    lq = torch.rand(1, 3, 17, 12, generator=torch.Generator().manual_seed(4))  # 3 x 2 tiles of 8
    whole = run_test(tta_model(SMALL_RF_NET, {'self_ensemble': self_ensemble_on}), lq)
    tiled = run_test(tta_model(SMALL_RF_NET, {'self_ensemble': self_ensemble_on,
                                              'tile': {'size': 8, 'overlap': RADIUS}}), lq)
    assert tiled.shape == whole.shape == (1, 3, 17 * SCALE, 12 * SCALE)
    assert torch.allclose(tiled, whole, atol=1e-6, rtol=0)
    # Without enough overlap the seams show: the check above is not vacuous.
    seams = run_test(tta_model(SMALL_RF_NET, {'self_ensemble': self_ensemble_on,
                                              'tile': {'size': 8, 'overlap': RADIUS - 2}}), lq)
    assert (seams - whole).abs().max().item() > 1e-4


def test_tiny_cfsr_tiles_exactly_with_overlap_8():
    # Tiny CFSR radius: conv_first 1 + 9x9 depthwise 4 + EFN pos 1 + conv_after_body 1 + upsample 1 = 8.
    lq = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(5))
    whole = run_test(tta_model(dict(TINY_CFSR), {}), lq)
    tiled = run_test(tta_model(dict(TINY_CFSR), {'tile': {'size': 8, 'overlap': 8}}), lq)
    assert torch.allclose(tiled, whole, atol=1e-5, rtol=0)


# ---- TTASRModel training: best checkpoint, early stopping, training states -------------------------

def scratch_opt(tmp_path, val_extra):
    """TTASRModel training a tiny CFSR from scratch (no frozen backbone)."""
    opt = delta_opt(tmp_path, None)
    opt.update(model_type='TTASRModel', network_g=dict(TINY_CFSR))
    opt['val'].update(val_freq=1, **val_extra)
    return opt


def validate(model, current_iter, psnr):
    """What a validation on the set 'val' leaves behind, with a chosen PSNR."""
    model.metric_results = {'psnr': psnr}
    model._track_best('val', current_iter)


def test_any_model_keeps_its_best_checkpoint_and_stops_early(tmp_path):
    opt = scratch_opt(tmp_path, {'save_best': True, 'early_stopping': {'patience': 2, 'min_delta': 0.5}})
    model = build_model(opt)
    assert type(model) is TTASRModel
    weights = {}
    for it, psnr in enumerate([10.0, 12.0, 12.4], start=1):  # 12.4: a gain below min_delta
        train_steps(model, 1)
        weights[it] = clone_state(model.net_g)
        validate(model, it, psnr)
    best = torch.load(tmp_path / 'exp' / 'models' / 'net_g_best.pth', weights_only=True)['params']
    assert all(torch.equal(best[k], v) for k, v in weights[2].items())
    assert not all(torch.equal(best[k], v) for k, v in weights[3].items())
    record = json.loads((tmp_path / 'exp' / 'best.json').read_text())
    assert record == {'dataset': 'val', 'metric': 'psnr', 'value': 12.0, 'iter': 2}
    with pytest.raises(EarlyStopping) as stop:
        validate(model, 4, 11.0)
    assert stop.value.code == 0 and stop.value.message.startswith('early stop at iter 4: best psnr 12.0000')


def test_training_state_restores_best_record_and_random_generators(tmp_path):
    opt = scratch_opt(tmp_path, {'early_stopping': {'patience': 5}})
    model = build_model(copy.deepcopy(opt))
    train_steps(model, 2)
    validate(model, 2, 20.0)
    validate(model, 3, 19.0)
    model.save_training_state(epoch=0, current_iter=3)
    expected = (random.random(), np.random.rand(), torch.rand(3))

    state = load_checked(str(tmp_path / 'exp' / 'training_states' / '3.state'))  # weights_only=True
    assert state['validation_pending'] is False  # iter 3's validation had updated the record
    resumed = build_model(copy.deepcopy(opt))
    for seed in (torch.manual_seed, random.seed, np.random.seed):
        seed(123)  # the generators move on; resume_training must bring them back
    resumed.resume_training(state)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    assert resumed._best == dict(dataset='val', metric='psnr', value=20.0, iter=2, stale=1)
    opt_state, resumed_opt_state = model.optimizer_g.state_dict(), resumed.optimizer_g.state_dict()
    assert all(torch.equal(opt_state['state'][i]['exp_avg'], resumed_opt_state['state'][i]['exp_avg'])
               for i in opt_state['state'])
