"""Export: whole-network .pth round trips, train-form merging, ONNX vs PyTorch in onnxruntime."""
import os
import runpy

import pytest
import torch
import yaml
from conftest import ROOT, TINY_CFSR, official_weights, write_tiny_model

from cfsrdelta_arch.archs.cfsr_arch import CFSR
from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
from cfsrdelta_arch.app.export import check_onnx, export_onnx, export_pth
from cfsrdelta_arch.app.engine import SREngine, load_inference_network
from cfsrdelta_arch.utils.weights import CheckpointError, load_weights

ONNX_TOLERANCE = 1e-4
SIZES = ((24, 32), (37, 29))  # two LR sizes, one odd, to exercise the dynamic axes


def delta_options(refiner, backbone_weights):
    """Option dict of a CFSR-Delta x4 train file: official CFSR x4 backbone + ``refiner``."""
    refiner_opt = {'type': refiner, 'init_std': 0.05}  # large enough for the refiner to matter
    if refiner in ('LRRefineNet', 'BPRefineNet'):
        refiner_opt.update(upscale=4, width=8, num_convs=3)
    else:
        refiner_opt.update(width=8)
    return {'scale': 4, 'network_g': {'type': 'BackboneDelta', 'backbone': {'type': 'CFSR', 'upscale': 4},
                                      'refiner': refiner_opt, 'backbone_weights': backbone_weights},
            'path': {'pretrain_network_g': None}}


def write_delta(tmp_path, refiner):
    """(option file, refiner-only checkpoint) of a CFSR-Delta x4 with a random refiner."""
    opt = delta_options(refiner, official_weights('CFSR_x4.pth'))
    torch.manual_seed(0)
    refiner_net = build_from_options(opt['network_g']['refiner'])
    refiner_pth = str(tmp_path / 'refiner.pth')
    torch.save({'params': refiner_net.state_dict()}, refiner_pth)
    opt_path = str(tmp_path / 'delta.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f)
    return opt_path, refiner_pth


def test_onnx_official_cfsr_x4(tmp_path):
    engine = SREngine.from_weights('CFSR', official_weights('CFSR_x4.pth'), 4, device='cpu')
    path = export_onnx(engine.net, str(tmp_path / 'cfsr_x4.onnx'))
    results = check_onnx(engine.net, path, SIZES)
    assert [size for size, _ in results] == list(SIZES)
    assert max(d for _, d in results) < ONNX_TOLERANCE, results


@pytest.mark.parametrize('refiner', ['BPRefineNet', 'LRRefineNet', 'RefineNet'])
def test_onnx_cfsrdelta_x4(tmp_path, refiner):
    opt_path, refiner_pth = write_delta(tmp_path, refiner)
    engine = SREngine.from_option_file(opt_path, weights=refiner_pth, device='cpu')
    path = export_onnx(engine.net, str(tmp_path / 'delta.onnx'))
    results = check_onnx(engine.net, path, SIZES)
    assert max(d for _, d in results) < ONNX_TOLERANCE, results


def test_whole_cfsrdelta_pth_round_trip(tmp_path):
    """The exported whole network needs no backbone file and gives the same output."""
    opt_path, refiner_pth = write_delta(tmp_path, 'LRRefineNet')
    engine = SREngine.from_option_file(opt_path, weights=refiner_pth, device='cpu')
    whole = export_pth(engine.net, str(tmp_path / 'whole.pth'))
    with open(opt_path) as f:
        opt = yaml.safe_load(f)
    opt['network_g']['backbone_weights'] = None  # the whole file alone must be enough
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f)
    again = SREngine.from_option_file(opt_path, weights=whole, device='cpu')
    x = torch.rand(1, 3, 20, 24)
    torch.testing.assert_close(again.sr_tensor(x), engine.sr_tensor(x), rtol=0, atol=0)
    # Without a backbone, a refiner-only checkpoint is refused with a one-line reason.
    with pytest.raises(CheckpointError, match='backbone weights are needed'):
        SREngine.from_option_file(opt_path, weights=refiner_pth)


def test_train_form_is_merged_and_exported(tmp_path):
    """A train-form CFSR checkpoint loads, runs merged, and its export loads into both forms."""
    torch.manual_seed(0)
    options = {k: v for k, v in TINY_CFSR.items() if k != 'type'}
    train_net = CFSR(**options, deploy=False).eval()
    for name, p in train_net.named_parameters():
        p.data.add_(torch.randn_like(p) * (0.1 if '_scale' in name else 0.05))
    train_pth = str(tmp_path / 'train_form.pth')
    torch.save({'params': train_net.state_dict()}, train_pth)

    net = load_inference_network(dict(TINY_CFSR, deploy=False), train_pth)
    assert net.deploy
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(net(x), train_net(x), rtol=0, atol=1e-5)
    exported = export_pth(net, str(tmp_path / 'deploy.pth'))
    deploy_net = load_weights(CFSR(**options).eval(), exported)
    from_train_options = load_inference_network(dict(TINY_CFSR, deploy=False), exported)
    with torch.no_grad():
        torch.testing.assert_close(deploy_net(x), net(x), rtol=0, atol=0)
        torch.testing.assert_close(from_train_options(x), net(x), rtol=0, atol=0)


def test_export_script(tmp_path, capsys):
    opt_path, pth = write_tiny_model(str(tmp_path))
    out_pth, out_onnx = str(tmp_path / 'out' / 'tiny.pth'), str(tmp_path / 'out' / 'tiny.onnx')
    script = runpy.run_path(os.path.join(ROOT, 'scripts', 'export_model.py'))
    status = script['main'](['--opt', opt_path, '--weights', pth, '--pth', out_pth, '--onnx', out_onnx])
    out = capsys.readouterr().out
    assert status == 0, out
    assert os.path.isfile(out_pth) and os.path.isfile(out_onnx)
    assert out.count('onnxruntime vs PyTorch') == 2
    # A wrong checkpoint is a one-line error and exit status 1.
    status = script['main'](['--arch', 'CFSR', '--scale', '4', '--weights', pth, '--pth', out_pth])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith('error: ') and len(err.strip().splitlines()) == 1
