"""Backends: onnxruntime and OpenVINO match PyTorch (whole image, x8 self-ensemble, tiles, odd sizes),
compile one shape per tiled run, reuse and repair their disk cache; --backend in the CLI."""
import os

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F
from conftest import ROOT, TINY_CFSR, official_weights, smooth_image, write_tiny_model

from cfsrdelta_arch.app import backends
from cfsrdelta_arch.app.cli import main
from cfsrdelta_arch.app.engine import SREngine, load_inference_network, resolve_device
from cfsrdelta_arch.utils.inference import tiled_forward

TOLERANCE = 1e-4  # max abs difference to PyTorch, float output
RUNTIMES = ('onnxruntime', 'openvino')
ODD_LR = (17, 11)  # (H, W): odd and non-square, so transposed ensemble variants have another shape
NETWORKS = [('CFSR', 2), ('CFSR', 3), ('CFSR', 4), ('LESRCNN', 2), ('LESRCNN', 3), ('LESRCNN', 4), ('CFSRDelta', 4)]
ENSEMBLE_CHECKED = {('CFSR', 4), ('CFSRDelta', 4)}  # x8 runs the same graph 8 times: two networks suffice


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """$CFSRDELTA_CACHE for the module: each network is exported once for both runtimes."""
    with pytest.MonkeyPatch.context() as patch:
        folder = str(tmp_path_factory.mktemp('compiled'))
        patch.setenv(backends.CACHE_ENV, folder)
        yield folder


def load_network(name, scale):
    """Official CFSR/LESRCNN, or CFSR-Delta (shipped BPRefineNet refiner + official CFSR backbone),
    eval and deploy form, as cfsrdelta-infer loads them."""
    if name != 'CFSRDelta':
        return load_inference_network({'type': name, 'upscale': scale}, official_weights(f'{name}_x{scale}.pth'))
    network = {'type': 'BackboneDelta', 'backbone': {'type': 'CFSR', 'upscale': scale},
               'refiner': {'type': 'BPRefineNet', 'upscale': scale, 'width': 20, 'num_convs': 3, 'bp_steps': 3},
               'backbone_weights': official_weights(f'CFSR_x{scale}.pth')}
    return load_inference_network(network, os.path.join(ROOT, 'weights', 'cfsrdelta', f'CFSRDelta_BPRefineNet_x{scale}.pth'),
                                  'params_ema')


@pytest.mark.parametrize('name, scale', NETWORKS, ids=[f'{n}_x{s}' for n, s in NETWORKS])
def test_runtimes_match_torch(name, scale, cache):
    """Whole odd-sized image (and x8 self-ensemble), float output, within TOLERANCE of PyTorch."""
    net = load_network(name, scale)
    x = torch.rand(1, 3, *ODD_LR, generator=torch.Generator().manual_seed(0))
    reference = SREngine(net, scale, device='cpu')
    expected = {False: reference.sr_tensor(x)}
    if (name, scale) in ENSEMBLE_CHECKED:
        reference.self_ensemble = True
        expected[True] = reference.sr_tensor(x)
    assert expected[False].shape == (1, 3, ODD_LR[0] * scale, ODD_LR[1] * scale)
    for runtime in RUNTIMES:
        engine = SREngine(net, scale, device='cpu', backend=runtime)
        for ensemble in expected:
            engine.self_ensemble = ensemble
            diff = (engine.sr_tensor(x) - expected[ensemble]).abs().max().item()
            assert diff < TOLERANCE, (runtime, ensemble, diff)


def test_tiles_have_one_shape():
    """Every window tiled_forward hands to the network has the same size (edge windows shifted
    inward), and the cores put together give the whole-image result of a pointwise 'network'."""
    x = torch.rand(1, 3, 29, 37)
    shapes = []

    def upsample(t):
        shapes.append(tuple(t.shape))
        return t.repeat_interleave(2, -2).repeat_interleave(2, -1)

    out = tiled_forward(upsample, x, 2, tile_size=8, tile_overlap=3)
    assert set(shapes) == {(1, 3, 14, 14)} and len(shapes) == 4 * 5
    assert torch.equal(out, upsample(x))


def test_tiles_use_the_margin_as_context_only():
    """With ``margin`` pixels of context around the image, a network of receptive radius 1 (a 3x3 conv
    with zero padding, then x2 nearest) tiled with overlap >= 1 equals the whole padded input's output
    cropped to the image; stored piece by piece too. Without the margin the border differs."""
    torch.manual_seed(0)
    image, weight = torch.rand(1, 3, 21, 26), torch.rand(3, 3, 3, 3)

    def net(t):
        return F.conv2d(t, weight, padding=1).repeat_interleave(2, -2).repeat_interleave(2, -1)
    margin = 4
    padded = F.pad(image, (margin,) * 4, mode='reflect')
    expected = net(padded)[..., 2 * margin:-2 * margin, 2 * margin:-2 * margin]
    torch.testing.assert_close(tiled_forward(net, padded, 2, 8, 2, margin=margin), expected, rtol=0, atol=1e-6)
    pieces = torch.zeros_like(expected)

    def store(rows, cols, sr):
        pieces[..., rows, cols] = sr
    tiled_forward(net, padded, 2, 8, 2, store=store, margin=margin)
    torch.testing.assert_close(pieces, expected, rtol=0, atol=1e-6)
    assert (tiled_forward(net, image, 2, 8, 2) - expected).abs().max() > 0.1


def test_tiled_openvino_compiles_one_shape(tmp_path, monkeypatch):
    """A tiled run compiles one shape; with self-ensemble and non-square windows, two (transposed).
    Both match PyTorch's tiled output."""
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / 'cache'))
    _, pth = write_tiny_model(str(tmp_path))
    net = load_inference_network(TINY_CFSR, pth)
    x = torch.rand(1, 3, 29, 37, generator=torch.Generator().manual_seed(1))
    for ensemble, tile, shapes in ((False, 8, 1), (True, 24, 2)):  # windows 24x24; 29x37 (non-square)
        reference = SREngine(net, 2, device='cpu', tile_size=tile, tile_overlap=8, self_ensemble=ensemble)
        engine = SREngine(net, 2, device='cpu', tile_size=tile, tile_overlap=8, self_ensemble=ensemble,
                          backend='openvino')
        diff = (engine.sr_tensor(x) - reference.sr_tensor(x)).abs().max().item()
        assert diff < TOLERANCE
        assert engine.backend.request.cache_info().misses == shapes


def test_cache_is_reused_keyed_and_repaired(tmp_path, monkeypatch):
    """A second backend for the same network reads the cached ONNX file and compiled blob (no export,
    no compile); other weights get other files; a corrupt blob is compiled again and replaced."""
    _, pth = write_tiny_model(str(tmp_path))
    net = load_inference_network(TINY_CFSR, pth)
    folder = str(tmp_path / 'cache')
    x = torch.rand(1, 3, 9, 11)
    expected = backends.make_backend('openvino', net, folder=folder)(x)
    files = {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)}
    assert sorted(os.path.splitext(name)[1] for name in files) == ['.blob', '.onnx']

    def refuse(*_args, **_kwargs):
        raise AssertionError('recompiled although cached')
    with monkeypatch.context() as patch:
        patch.setattr(backends, 'export_onnx', refuse)
        again = backends.make_backend('openvino', net, folder=folder)
        patch.setattr(again.core, 'compile_model', refuse)
        torch.testing.assert_close(again(x), expected, rtol=0, atol=0)
    assert {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)} == files

    blob = next(os.path.join(folder, name) for name in files if name.endswith('.blob'))
    with open(blob, 'wb') as f:
        f.write(b'not a compiled model')
    torch.testing.assert_close(backends.make_backend('openvino', net, folder=folder)(x), expected, rtol=0, atol=0)
    assert os.path.getsize(blob) > 100

    with torch.no_grad():
        net.conv_first.bias.add_(0.01)
    backends.make_backend('onnxruntime', net, folder=folder)
    assert len([name for name in os.listdir(folder) if name.endswith('.onnx')]) == 2


def test_cli_backends_write_the_torch_image(tmp_path, monkeypatch):
    """cfsrdelta-infer --backend X writes the torch backend's image (within one 8-bit level), caching
    under $CFSRDELTA_CACHE."""
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / 'cache'))
    opt, pth = write_tiny_model(str(tmp_path))
    image = str(tmp_path / 'in.png')
    cv2.imwrite(image, smooth_image(12, 16))
    outputs = {}
    for backend in ('torch',) + RUNTIMES:
        out = tmp_path / backend
        assert main(['-i', image, '-o', str(out), '--opt', opt, '--weights', pth, '--backend', backend,
                     '--threads', '2', '--device', 'cpu']) == 0
        outputs[backend] = cv2.imread(str(out / 'in.png')).astype(int)
    for runtime in RUNTIMES:
        assert np.abs(outputs[runtime] - outputs['torch']).max() <= 1
    assert any(name.endswith('.blob') for name in os.listdir(tmp_path / 'cache'))


def test_bad_backend_or_device_is_one_line():
    with pytest.raises(ValueError, match="backend 'tensorrt' is not one of torch, onnxruntime, openvino"):
        resolve_device('cpu', 'tensorrt')
    assert resolve_device('auto', 'openvino') == torch.device('cpu')


def test_measure_backends_table(tmp_path, monkeypatch):
    """The backend benchmark (scripts/bench_backends.py) on a tiny network, tiled: the eager reference
    row (speed-up 1, difference 0), then the backend's row within TOLERANCE of it, rates from the
    given MACs (each row's memory comes from a fresh process: one backend keeps the test short)."""
    from cfsrdelta_arch.app.benchmark import EAGER, format_backend_table, measure_backends
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / 'cache'))
    _, pth = write_tiny_model(str(tmp_path))
    net = load_inference_network(TINY_CFSR, pth)
    threads = torch.get_num_threads()
    try:
        rows = measure_backends([('tiny', net, 2, torch.rand(1, 3, 12, 16), 8, 1e6)], ['openvino'], repeats=1,
                                threads=1, peak_macs=1e9)
    finally:
        torch.set_num_threads(threads)
    assert [r['backend'] for r in rows] == [EAGER, 'openvino']
    assert all(r['peak_rss'] >= 0 and r['output_bytes'] == 24 * 32 * 3 for r in rows)
    assert rows[0]['speedup'] == 1 and rows[0]['max_diff'] == 0
    assert all(r['max_diff'] < TOLERANCE for r in rows)
    assert all(r['macs_per_s'] == pytest.approx(1e6 / r['seconds']) and
               r['peak_fraction'] == pytest.approx(r['macs_per_s'] / 1e9) for r in rows)
    assert len(format_backend_table(rows).splitlines()) == 2 + len(rows)


def test_openvino_layer_profile_splits_the_time_and_the_macs_by_layer_kind(tmp_path, monkeypatch):
    """scripts/profile_openvino.py on a tiny CFSR: the three conv kinds carry all the conv MACs, the
    shares add up to 1, and rates follow from the MACs and the times."""
    from cfsrdelta_arch.app.benchmark import openvino_layer_profile
    from cfsrdelta_arch.utils.flops import count_conv_macs
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / 'cache'))
    _, pth = write_tiny_model(str(tmp_path))
    net = load_inference_network(TINY_CFSR, pth)
    lr = torch.rand(1, 3, 20, 24)
    seconds, rows = openvino_layer_profile(net, lr, threads=1, repeats=1, peak_macs=1e9)
    by_kind = {r['kind']: r for r in rows}
    assert seconds > 0 and {'1x1', 'depthwise', 'dense'} <= set(by_kind)
    assert sum(by_kind[k]['macs'] for k in ('1x1', 'depthwise', 'dense')) == count_conv_macs(net, lr)
    assert sum(r['share'] for r in rows) == pytest.approx(1)
    assert all(r['macs_per_s'] == pytest.approx(r['macs'] / r['seconds']) for r in rows if r['macs'])
