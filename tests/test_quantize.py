"""int8 post-training quantization (app/quantize.py, scripts/bench_int8.py) on a tiny CFSR: which
convolutions stay fp32, that every other one is quantized, and that the int8 model still computes
the network (close to fp32, not equal)."""
import os

import numpy as np
import onnx
import pytest
import torch

from cfsrdelta_arch.app.engine import load_inference_network
from cfsrdelta_arch.app.export import export_onnx
from cfsrdelta_arch.app.quantize import calibration_crops, image_facing_convs, openvino_model, quantize_int8
from conftest import TINY_CFSR, smooth_image, write_png, write_tiny_model


@pytest.fixture
def tiny_onnx(tmp_path):
    _, pth = write_tiny_model(str(tmp_path))
    net = load_inference_network(TINY_CFSR, pth)
    return export_onnx(net, str(tmp_path / 'tiny.onnx')), net


def test_image_facing_convs_are_the_first_and_the_upsampler(tiny_onnx):
    assert image_facing_convs(onnx.load(tiny_onnx[0])) == ['/conv_first/Conv', '/upsample/upsample.0/Conv']


def test_int8_model_quantizes_the_other_convs_and_stays_close(tiny_onnx, tmp_path):
    path, net = tiny_onnx
    for i in range(4):
        write_png(str(tmp_path / 'lr' / f'{i}.png'), smooth_image(40, 52, seed=i))
    crops = calibration_crops(str(tmp_path / 'lr'), count=4, size=32)
    assert len(crops) == 4 and crops[0].shape == (1, 3, 32, 32) and crops[0].dtype == np.float32
    out = str(tmp_path / 'tiny-int8.onnx')
    kept = quantize_int8(path, out, crops)
    graph = onnx.load(out).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == 'DequantizeLinear'}
    convs = [n for n in graph.node if n.op_type == 'Conv']
    quantized = {n.name for n in convs if n.input[0] in dequantized}
    assert quantized == {n.name for n in convs} - set(kept) and len(quantized) == len(convs) - 2
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]  # written atomically, no leftovers
    lr = crops[0]
    with torch.no_grad():
        ref = net(torch.from_numpy(lr)).numpy()
    error = np.abs(openvino_model(out, threads=1)(lr) - ref)
    assert error.max() > 1e-5 and error.mean() < 0.1 * ref.std()  # int8 arithmetic, still the same network


def test_too_few_large_enough_calibration_images_is_one_line(tmp_path):
    write_png(str(tmp_path / 'lr' / 'a.png'), smooth_image(40, 52))
    write_png(str(tmp_path / 'lr' / 'b.png'), smooth_image(30, 52))  # too small for 32-pixel crops: not drawn
    assert len(calibration_crops(str(tmp_path / 'lr'), count=1, size=32)) == 1
    with pytest.raises(ValueError, match=r'1 image\(s\) of at least 32x32 pixels, calibration needs 2'):
        calibration_crops(str(tmp_path / 'lr'), count=2, size=32)
