"""int8 post-training quantization of a network's ONNX export, measured against fp32 (scripts/bench_int8.py).

onnxruntime's static quantization (QDQ format: per-channel int8 weights, uint8 activations with
ranges calibrated by MinMax on crops of *training* LR images, never a benchmark set) of the
convolutions only; the convolutions that read the image and write the output stay fp32, the usual
first/last-layer exception. OpenVINO runs the QDQ model with int8 kernels. Measured on CFSR x4 this
loses far more than the 0.02 dB a user option would be allowed (README, "CPU runtimes"), so it
exists as a measurement, not as a backend setting.
"""
import cv2
import numpy as np
import onnx
import torch
from basicsr.metrics import calculate_psnr

from cfsrdelta_arch.data.lr_generation import list_images
from cfsrdelta_arch.utils.fileio import atomic_path
from cfsrdelta_arch.utils.image_io import tensor_to_image
from .backends import numpy_input, openvino_config
from .benchmark import interleaved_median_seconds, protocol_pair


def calibration_crops(lr_folder, count=64, size=48, seed=0):
    """``count`` random ``size``x``size`` crops of the images in ``lr_folder`` that are at least that
    large (one crop per image, images drawn without replacement), each (1, 3, size, size) float32
    RGB in [0, 1].

    Raises:
        ValueError: fewer than ``count`` images of at least ``size`` pixels a side.
    """
    images = [img for img in (cv2.imread(path, cv2.IMREAD_COLOR) for path in list_images(lr_folder))
              if img is not None and min(img.shape[:2]) >= size]
    if len(images) < count:
        raise ValueError(f'{lr_folder}: {len(images)} image(s) of at least {size}x{size} pixels, '
                         f'calibration needs {count}')
    rng = np.random.default_rng(seed)
    crops = []
    for index in rng.choice(len(images), count, replace=False):
        img = images[index]
        top, left = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        crop = img[top:top + size, left:left + size, ::-1].transpose(2, 0, 1)
        crops.append(np.ascontiguousarray(crop[None], dtype=np.float32) / 255)
    return crops


# Element-wise and layout steps between the image and its nearest convolutions (mean subtraction,
# pixel shuffle, residual adds).
PASSTHROUGH_OPS = {'Sub', 'Add', 'Mul', 'Div', 'DepthToSpace', 'Clip', 'Identity'}


def nearest_convs(tensors, next_nodes, onward):
    """Names of the Conv nodes reached from ``tensors`` through :data:`PASSTHROUGH_OPS` only;
    ``next_nodes(tensor)`` gives the nodes one step away, ``onward(node)`` the tensors to go on from."""
    found, seen, stack = set(), set(), list(tensors)
    while stack:
        for node in next_nodes(stack.pop()):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == 'Conv':
                found.add(node.name)
            elif node.op_type in PASSTHROUGH_OPS:
                stack.extend(onward(node))
    return found


def image_facing_convs(model):
    """Names of the Conv nodes that read the graph's input or feed its output, through element-wise
    or layout steps only: the layers whose quantization error goes straight into the image."""
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    first = nearest_convs([i.name for i in model.graph.input], lambda t: consumers.get(t, []), lambda n: n.output)
    last = nearest_convs([o.name for o in model.graph.output], lambda t: [producers[t]] if t in producers else [],
                         lambda n: n.input)
    return sorted(first | last)


def quantize_int8(onnx_path, out_path, crops):
    """Write the int8 QDQ model of ``onnx_path`` to ``out_path`` (atomically), calibrated on ``crops``
    (:func:`calibration_crops`); convolutions only, :func:`image_facing_convs` kept in fp32.

    Returns:
        list[str]: the Conv nodes kept in fp32.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    model = onnx.load(onnx_path)
    input_name = model.graph.input[0].name
    keep_fp32 = image_facing_convs(model)

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(crops)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    with atomic_path(out_path, suffix='.part.onnx') as tmp:
        quantize_static(onnx_path, tmp, Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=['Conv'],
                        nodes_to_exclude=keep_fp32)
    return keep_fp32


def openvino_model(path, threads=2):
    """``fn(lr)``: the ONNX file ``path`` compiled by OpenVINO for the CPU (dynamic shapes, LATENCY hint,
    ``threads``); LR (1, 3, H, W) float32 numpy -> SR float32 numpy."""
    import openvino as ov
    compiled = ov.Core().compile_model(path, 'CPU', openvino_config(threads))
    request = compiled.create_infer_request()

    def run(lr):
        request.infer({0: lr})
        return request.get_output_tensor(0).data.copy()
    return run


def mean_psnr_y(models, hr_images, scale):
    """{name: mean PSNR-Y (crop ``scale``, BasicSR's metric) of ``models[name]`` (numpy LR -> SR, see
    :func:`openvino_model`)} over ``hr_images`` (uint8 BGR), each downsampled per the benchmark protocol."""
    scores = {name: [] for name in models}
    for hr in hr_images:
        hr, lr = protocol_pair(hr, scale)
        lr = numpy_input(lr)
        for name, model in models.items():
            sr = tensor_to_image(torch.from_numpy(model(lr)), bgr=True)
            scores[name].append(calculate_psnr(sr, hr, scale, test_y_channel=True))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def int8_comparison_rows(fp32_path, int8_path, benchmark_sets, scale, repeats=9, threads=2, progress=None):
    """Rows [measure, fp32, int8, change] of scripts/bench_int8.py: mean PSNR-Y of both models (OpenVINO)
    on each of ``benchmark_sets`` ({name: [uint8 BGR HR images]}), then their latency on a 320x180 LR
    (median of ``repeats`` interleaved runs)."""
    models = {'fp32': openvino_model(fp32_path, threads), 'int8': openvino_model(int8_path, threads)}
    rows = []
    for name, images in benchmark_sets.items():
        psnr = mean_psnr_y(models, images, scale)
        rows.append([f'{name} x{scale} PSNR-Y', f"{psnr['fp32']:.4f} dB", f"{psnr['int8']:.4f} dB",
                     f"{psnr['int8'] - psnr['fp32']:+.4f} dB"])
        if progress:
            progress(f'{name}: done')
    lr = np.random.default_rng(0).random((1, 3, 180, 320), dtype=np.float32)
    seconds = interleaved_median_seconds(models, lr, repeats)
    rows.append([f'latency 320x180 -> {320 * scale}x{180 * scale} (OpenVINO)', f"{seconds['fp32'] * 1000:.0f} ms",
                 f"{seconds['int8'] * 1000:.0f} ms", f"{seconds['fp32'] / seconds['int8']:.2f}x faster"])
    return rows
