"""CPU backends side by side: torch (eager), onnxruntime and OpenVINO on CFSR x4 and CFSR-Delta x4.

Cases: a 320x180 LR frame (1280x720 output) as a whole image, and unless --skip-4k a 960x540 frame
(3840x2160 output) in --tile LR tiles. Every backend runs through SREngine as cfsrdelta-infer runs it
(compiled models cached: app/backends.py); after one warm-up call per backend (compilation), the
backends are timed in --repeats interleaved rounds in this one process, --threads threads each.
Every case also runs the network as it is (NCHW, torch.no_grad, no uint8 conversions): the "eager"
reference of the speed-ups and differences. The processes use the CLI's allocator settings
(utils/allocator.py), as cfsrdelta-infer does, unless --glibc-malloc. Columns: median latency,
speed-up vs eager, effective multiply-adds per second (conv MACs of the whole-image network,
utils/flops.py; the 4K MACs are the 720p count x9, convs scale with the pixels; tile overlap is
not counted), that rate as a fraction of this machine's fp32 peak (a 4096^2 torch
matmul in the same run), the peak RSS increase of the first full-size call in a fresh process
(tiled cases: after a one-window warm-up, so it is what the image itself costs), max abs difference
to eager.

Run on an otherwise idle machine for numbers to report:
  python scripts/bench_backends.py --repeats 9
Quick check:
  python scripts/bench_backends.py --repeats 1 --skip-4k
"""
import argparse
import sys

import torch

from cfsrdelta_arch.app.backends import BACKENDS
from cfsrdelta_arch.app.benchmark import format_backend_table, matmul_macs_per_second, measure_backends
from cfsrdelta_arch.app.engine import SREngine
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse
from cfsrdelta_arch.utils.flops import count_conv_macs

FRAME_720P, FRAME_4K = (180, 320), (540, 960)  # LR (H, W) at x4


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cfsr-opt', default='options/test/test_CFSR_x4.yml', help='option file of CFSR x4')
    p.add_argument('--delta-opt', default='options/test/test_CFSRDelta_BPRefineNet_x4.yml',
                   help='option file of the CFSR-Delta x4 (default: the shipped BPRefineNet)')
    p.add_argument('--backends', nargs='+', choices=BACKENDS, default=list(BACKENDS),
                   help='backends to compare with eager PyTorch (default: all)')
    p.add_argument('--repeats', type=int, default=9, help='interleaved timed rounds (default 9)')
    p.add_argument('--threads', type=int, default=2, help='threads of every runtime (default 2)')
    p.add_argument('--tile', type=int, default=256, help='LR tile size of the 4K case (default 256)')
    p.add_argument('--skip-4k', action='store_true', help='only the 1280x720 case')
    p.add_argument('--glibc-malloc', action='store_true',
                   help="keep glibc's default allocator settings instead of the CLI's (utils/allocator.py)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.tile < 1:
        p.error('--repeats, --threads and --tile must be >= 1')
    if not args.glibc_malloc:
        keep_freed_memory_for_reuse()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    frames = [('1280x720', torch.rand(1, 3, *FRAME_720P, generator=gen), None)]
    if not args.skip_4k:
        frames.append((f'3840x2160 tile {args.tile}', torch.rand(1, 3, *FRAME_4K, generator=gen), args.tile))
    cases = []
    for name, opt in (('CFSR x4', args.cfsr_opt), ('CFSR-Delta x4', args.delta_opt)):
        engine = SREngine.from_option_file(opt, device='cpu')
        macs = count_conv_macs(engine.net, frames[0][1])
        for size, lr, tile in frames:
            pixels = lr.shape[-2] * lr.shape[-1] / (FRAME_720P[0] * FRAME_720P[1])
            cases.append((f'{name} {size}', engine.net, engine.scale, lr, tile, macs * pixels))
    peak = matmul_macs_per_second()
    print(f'{args.threads} thread(s), median of {args.repeats} interleaved rounds; fp32 peak (4096^2 matmul): '
          f'{peak / 1e9:.1f} GMAC/s', flush=True)
    rows = measure_backends(cases, args.backends, args.repeats, args.threads, peak,
                            progress=lambda line: print(line, file=sys.stderr, flush=True),
                            keep_freed_memory=not args.glibc_malloc)
    print(format_backend_table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
