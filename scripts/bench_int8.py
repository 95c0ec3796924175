"""int8 post-training quantization of CFSR x4 (app/quantize.py), measured: PSNR-Y change on the
benchmark sets and latency against fp32, both in OpenVINO (the fastest fp32 backend).

Calibration uses crops of the training split's LR images (scripts/prepare_training_data.py makes
datasets/train291/train/LR_bicubic/X4), never a benchmark image. The latency is the median of
--repeats interleaved runs on a 320x180 LR frame (1280x720 output) in this process.

  python scripts/bench_int8.py                       # idle machine
"""
import argparse
import os
import sys

import cv2
import numpy as np
import torch

from cfsrdelta_arch.app.backends import cached_onnx
from cfsrdelta_arch.app.benchmark import interleaved_median_seconds
from cfsrdelta_arch.app.engine import network_from_option_file
from cfsrdelta_arch.app.quantize import calibration_crops, mean_psnr_y, openvino_model, quantize_int8
from cfsrdelta_arch.data.lr_generation import list_images
from cfsrdelta_arch.utils.tables import markdown_table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--opt', default='options/test/test_CFSR_x4.yml', help='option file of the network (x4)')
    p.add_argument('--calibration', default='datasets/train291/train/LR_bicubic/X4',
                   help='folder of training LR images for the calibration crops')
    p.add_argument('--crops', type=int, default=64, help='calibration crops, one per image (default 64)')
    p.add_argument('--benchmark', default='../shared/datasets/benchmark', help='folder of <set>/HR')
    p.add_argument('--sets', nargs='+', default=['Set5', 'Set14', 'B100'])
    p.add_argument('--repeats', type=int, default=9, help='interleaved timed runs (default 9)')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    for folder in [args.calibration] + [os.path.join(args.benchmark, s, 'HR') for s in args.sets]:
        if not os.path.isdir(folder):
            p.error(f'{folder} is not a folder')
    torch.set_num_threads(args.threads)
    net, scale = network_from_option_file(args.opt)
    fp32_path = cached_onnx(net.eval())
    int8_path = os.path.splitext(fp32_path)[0] + f'-int8-{args.crops}crops.onnx'
    try:
        crops = calibration_crops(args.calibration, args.crops)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    kept = quantize_int8(fp32_path, int8_path, crops)
    print(f'int8 model: {int8_path} (fp32 kept: {", ".join(kept)})', file=sys.stderr)
    models = {'fp32': openvino_model(fp32_path, args.threads), 'int8': openvino_model(int8_path, args.threads)}
    rows = []
    for name in args.sets:
        hr = [cv2.imread(path, cv2.IMREAD_COLOR) for path in list_images(os.path.join(args.benchmark, name, 'HR'))]
        psnr = mean_psnr_y(models, hr, scale)
        rows.append([f'{name} x{scale} PSNR-Y', f"{psnr['fp32']:.4f} dB", f"{psnr['int8']:.4f} dB",
                     f"{psnr['int8'] - psnr['fp32']:+.4f} dB"])
        print(f'{name}: done', file=sys.stderr, flush=True)
    lr = np.random.default_rng(0).random((1, 3, 180, 320), dtype=np.float32)
    seconds = interleaved_median_seconds(models, lr, args.repeats)
    rows.append(['latency 320x180 -> 1280x720 (OpenVINO)', f"{seconds['fp32'] * 1000:.0f} ms",
                 f"{seconds['int8'] * 1000:.0f} ms", f"{seconds['fp32'] / seconds['int8']:.2f}x faster"])
    print(markdown_table(['measure', 'fp32', 'int8', 'change'], rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
