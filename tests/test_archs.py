"""Archs of the plugin: shapes, parameter counts, identity at init, CFSR merge, checked weight loading."""
import shutil

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from cfsrdelta_arch.archs.bprefinenet_arch import BPRefineNet
from cfsrdelta_arch.archs.cfsr_arch import CFSR, EDGE_MASKS
from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta, build_from_options
from cfsrdelta_arch.archs.lrrefinenet_arch import LRRefineNet
from cfsrdelta_arch.archs.refinenet_arch import RefineNet
from cfsrdelta_arch.archs.back_projection import BackProjection
from cfsrdelta_arch.utils.weights import load_weights, verify_official
from conftest import TINY_CFSR, checkpoint_error_line, official_weights, random_lr_sr, require_shared

SCALES = (2, 3, 4)
LR_H, LR_W = 10, 7  # non-square, odd: catches H/W mix-ups and scale rounding

# name -> (builder, inputs(scale) -> args, expected output shape(scale)), over all scales where relevant.
CASES = [
    *[(f'CFSR_x{s}', lambda s=s: CFSR(upscale=s), s, 'lr') for s in SCALES],
    *[(f'CFSR_train_x{s}', lambda s=s: CFSR(upscale=s, deploy=False), s, 'lr') for s in SCALES],
    ('RefineNet', lambda: RefineNet(), 1, 'sr'),
    *[(f'LRRefineNet_x{s}', lambda s=s: LRRefineNet(upscale=s), s, 'sr_lr') for s in SCALES],
    *[(f'BPRefineNet_x{s}', lambda s=s: BPRefineNet(upscale=s), s, 'sr_lr') for s in SCALES],
    *[(f'CFSRDelta_x{s}', lambda s=s: BackboneDelta({'type': 'CFSR', 'upscale': s},
                                                 {'type': 'LRRefineNet', 'upscale': s}), s, 'lr') for s in SCALES],
    *[(f'CFSRDelta_BPRefineNet_x{s}', lambda s=s: BackboneDelta({'type': 'CFSR', 'upscale': s},
                                                             {'type': 'BPRefineNet', 'upscale': s}), s, 'lr')
      for s in SCALES],
    ('CFSRDelta_RefineNet_x4', lambda: BackboneDelta({'type': 'CFSR', 'upscale': 4}, {'type': 'RefineNet'}), 4, 'lr'),
]


def count(net):
    return sum(p.numel() for p in net.parameters())


def lr_body_params(s, width=24, num_convs=3, c=3, lr_inputs=1):
    """Closed form of the LR-resolution refiner bodies: 3x3 convs (c s^2 + c * lr_inputs) -> width ->
    ... -> width -> c s^2, each with bias. LRRefineNet sees the LR (lr_inputs=1), BPRefineNet the LR and
    its consistency residual (2); BPRefineNet's bicubic kernels are fixed buffers, not parameters."""
    chans = [c * s * s + c * lr_inputs] + [width] * (num_convs - 1) + [c * s * s]
    return sum(9 * a * b + b for a, b in zip(chans[:-1], chans[1:]))


def test_all_tested_archs_are_registered_by_the_plugin():
    for name in ('CFSR', 'RefineNet', 'LRRefineNet', 'BPRefineNet', 'BackboneDelta'):
        cls = ARCH_REGISTRY.get(name)
        assert cls.__module__.startswith('cfsrdelta_arch.archs.'), name


@pytest.mark.parametrize('name,build,scale,kind', CASES, ids=[c[0] for c in CASES])
def test_output_shape(name, build, scale, kind):
    torch.manual_seed(0)
    net = build().eval()
    lr = torch.rand(2, 3, LR_H, LR_W)
    sr = torch.rand(2, 3, LR_H * scale, LR_W * scale)
    args = {'lr': (lr,), 'sr': (sr,), 'sr_lr': (sr, lr)}[kind]
    with torch.no_grad():
        out = net(*args)
    assert out.shape == (2, 3, LR_H * scale, LR_W * scale)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_lrrefinenet_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match='does not match'):
        LRRefineNet(upscale=4)(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 9, 10))


@pytest.mark.parametrize('scale,expected', [(2, 291_324), (3, 297_819), (4, 306_912)])
def test_cfsr_parameter_count(scale, expected):
    assert count(CFSR(upscale=scale)) == expected
    # Train form: + 3 branches x (scale + bias) x hidden(96) per EFN, 12 EFNs.
    assert count(CFSR(upscale=scale, deploy=False)) == expected + 12 * 3 * 2 * 96


def test_refinenet_parameter_count():
    assert count(RefineNet()) == 11_011


@pytest.mark.parametrize('scale', SCALES)
def test_lrrefinenet_parameter_count(scale):
    assert count(LRRefineNet(upscale=scale)) == lr_body_params(scale)
    assert count(LRRefineNet(upscale=scale, width=8, num_convs=2)) == lr_body_params(scale, 8, 2)


@pytest.mark.parametrize('scale', SCALES)
def test_bprefinenet_parameter_count_and_state_dict(scale):
    net = BPRefineNet(upscale=scale)
    assert count(net) == lr_body_params(scale, width=20, lr_inputs=2)
    assert all(k.startswith('body.') for k in net.state_dict())  # fixed kernels are not saved


@pytest.mark.parametrize('scale', SCALES)
def test_cfsrdelta_parameters_are_backbone_plus_refiner(scale):
    net = BackboneDelta({'type': 'CFSR', 'upscale': scale}, {'type': 'LRRefineNet', 'upscale': scale})
    assert count(net) == count(CFSR(upscale=scale)) + lr_body_params(scale)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == lr_body_params(scale)


# ---- identity at initialisation -------------------------------------------------------------------

@pytest.mark.parametrize('scale', SCALES)
def test_refiners_are_exactly_identity_with_init_std_0(scale):
    lr, sr = random_lr_sr(scale, seed=0, size=(LR_H, LR_W))
    with torch.no_grad():
        assert torch.equal(RefineNet(init_std=0)(sr), sr)
        assert torch.equal(LRRefineNet(upscale=scale, init_std=0)(sr, lr), sr)
        assert torch.equal(BPRefineNet(upscale=scale, init_std=0, bp_steps=0)(sr, lr), sr)
        # with its default 3 steps BPRefineNet starts as the training-free back-projection
        assert torch.equal(BPRefineNet(upscale=scale, init_std=0)(sr, lr), BackProjection(scale)(sr, lr))
        net = BackboneDelta({'type': 'CFSR', 'upscale': scale}, {'type': 'LRRefineNet', 'upscale': scale, 'init_std': 0})
        assert torch.equal(net(lr), net.backbone(lr).clamp(0, 1))


# Default init_std 1e-4: the last conv adds at most ~7e-4 on [0, 1] inputs (measured over 20 seeds);
# 5e-3 (about 1.3 grey levels at 8 bit) is the bound asserted here.
IDENTITY_TOL = 5e-3


@pytest.mark.parametrize('scale', SCALES)
def test_refiners_are_close_to_identity_with_default_init(scale):
    lr, sr = random_lr_sr(scale, seed=1, size=(LR_H, LR_W))
    with torch.no_grad():
        for out in (RefineNet()(sr), LRRefineNet(upscale=scale)(sr, lr)):
            diff = (out - sr).abs().max().item()
            assert 0 < diff <= IDENTITY_TOL
        net = BackboneDelta({'type': 'CFSR', 'upscale': scale}, {'type': 'LRRefineNet', 'upscale': scale})
        assert (net(lr) - net.backbone(lr).clamp(0, 1)).abs().max().item() <= IDENTITY_TOL


def test_cfsrdelta_backbone_is_frozen_and_stays_in_eval():
    net = BackboneDelta(TINY_CFSR, {'type': 'RefineNet'})
    net.train()
    assert not net.backbone.training and all(not m.training for m in net.backbone.modules())
    assert net.refiner.training
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.refiner.parameters())


# ---- CFSR train form -> merge -> deploy form --------------------------------------------------------

def randomise_train_form(net, seed):
    """Give the edge branches and layer scales O(1) values, so the EFN edge path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if 'layer_scale' in name:
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.25)
            elif any(f'{b}_' in name for b in EDGE_MASKS):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def edge_params(net):
    return {n: p for n, p in net.named_parameters() if any(f'{b}_' in n for b in EDGE_MASKS)}


def official_keys(scale):
    """(name, shape) of every tensor of CFSR_x<scale>.pth, from ../shared/weights/official/KEYS.txt."""
    path = require_shared('weights', 'official', 'KEYS.txt')
    keys, inside = {}, False
    with open(path) as f:
        for line in f:
            if line.startswith('#'):
                inside = line.split()[1] == f'CFSR_x{scale}.pth'
            elif inside and line.strip():
                name, shape, _ = line.rstrip('\n').split('\t')
                keys[name] = tuple(int(v) for v in shape.strip('()').split(',') if v.strip())
    assert keys, f'no CFSR_x{scale}.pth section in {path}'
    return keys


@pytest.mark.parametrize('scale', SCALES)
def test_cfsr_merge_is_equivalent(scale):
    torch.manual_seed(scale)
    net = CFSR(upscale=scale, deploy=False).eval()
    randomise_train_form(net, seed=scale)
    x = torch.rand(1, 3, 16, 12)
    with torch.no_grad():
        y_train = net(x)
        saved = {n: p.clone() for n, p in edge_params(net).items()}
        for p in edge_params(net).values():
            p.zero_()
        y_no_edges = net(x)
        for n, p in edge_params(net).items():
            p.copy_(saved[n])
        # The test is meaningful: the edge branches change the output by far more than the tolerance.
        assert (y_train - y_no_edges).abs().max().item() > 0.1
        assert not net.deploy
        net.merge()
        assert net.deploy and not edge_params(net)
        y_merged = net(x)
    assert (y_train - y_merged).abs().max().item() <= 1e-5
    assert count(net) == count(CFSR(upscale=scale))


@pytest.mark.parametrize('scale', SCALES)
def test_merged_state_dict_matches_official_keys(scale):
    net = CFSR(upscale=scale, deploy=False).merge()
    expected = official_keys(scale)
    own = net.state_dict()
    assert list(own) == list(expected)
    assert {k: tuple(v.shape) for k, v in own.items()} == expected
    assert 'mean' not in own  # a constant, not part of the checkpoint


# ---- official weights ------------------------------------------------------------------------------

@pytest.mark.parametrize('scale', SCALES)
def test_official_cfsr_weights_load_strictly(scale):
    path = official_weights(f'CFSR_x{scale}.pth')
    net = load_weights(CFSR(upscale=scale), path).eval()
    ref = torch.load(path, map_location='cpu', weights_only=True)['params']
    own = net.state_dict()
    assert set(own) == set(ref) and all(torch.equal(own[k], ref[k]) for k in ref)
    with torch.no_grad():
        out = net(torch.full((1, 3, 8, 8), 0.5))
    assert out.shape == (1, 3, 8 * scale, 8 * scale)
    # A flat grey image stays close to grey.
    assert (out - 0.5).abs().max().item() < 0.05


def test_wrong_scale_is_one_clear_line():
    path = official_weights('CFSR_x2.pth')
    msg = checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), path))
    assert 'x2 CFSR' in msg and 'x4' in msg and 'upscale: 2' in msg


def test_other_network_is_one_clear_line():
    path = official_weights('LESRCNN_x4.pth')
    msg = checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), path))
    assert msg.startswith(f'{path}: not a CFSR checkpoint')  # names the file


def test_deploy_checkpoint_into_train_form_is_one_clear_line():
    path = official_weights('CFSR_x4.pth')
    msg = checkpoint_error_line(lambda: load_weights(CFSR(upscale=4, deploy=False), path))
    assert 'merged (deploy-form)' in msg


def test_train_form_checkpoint_into_deploy_form_is_one_clear_line():
    state = build_from_options(dict(TINY_CFSR, deploy=False)).state_dict()
    msg = checkpoint_error_line(lambda: build_from_options(TINY_CFSR).load_state_dict(state))
    assert 'train-form' in msg


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    msg = checkpoint_error_line(lambda: load_weights(CFSR(), str(tmp_path / 'nope.pth')))
    assert 'checkpoint not found' in msg


def test_sha256_mismatch_is_detected(tmp_path):
    src = official_weights('CFSR_x4.pth')
    copy = tmp_path / 'CFSR_x4.pth'
    shutil.copyfile(src, copy)
    verify_official(str(copy))  # an intact copy passes
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    msg = checkpoint_error_line(lambda: verify_official(str(copy)))
    assert 'sha256' in msg and 'does not match' in msg
    checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), str(copy)))  # loading verifies too
    # The same bytes under a non-official name are not checked.
    other = tmp_path / 'my_cfsr.pth'
    shutil.copyfile(copy, other)
    verify_official(str(other))
