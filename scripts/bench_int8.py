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

import torch

from cfsrdelta_arch.app.backends import cached_onnx
from cfsrdelta_arch.app.engine import network_from_option_file
from cfsrdelta_arch.app.quantize import calibration_crops, int8_comparison_rows, quantize_int8
from cfsrdelta_arch.data.lr_generation import list_images, read_image_color
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
    benchmark_sets = {name: [read_image_color(path) for path in list_images(os.path.join(args.benchmark, name, 'HR'))]
                      for name in args.sets}
    rows = int8_comparison_rows(fp32_path, int8_path, benchmark_sets, scale, args.repeats, args.threads,
                                progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(markdown_table(['measure', 'fp32', 'int8', 'change'], rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
