"""CPU latency of PyTorch vs onnxruntime for CFSR x4 and CFSR-Delta x4 on one LR frame.

Both networks are loaded as by cfsrdelta-infer (deploy form), exported with
cfsrdelta_arch.app.export to a temporary ONNX file, and timed on the same random LR input
(1, 3, H, W): warm-up runs, then the median of the timed repeats, whole frame (no tiling, no
self-ensemble). Without --delta-weights the CFSR-Delta refiner is randomly initialised, which does
not change its cost. Run on an otherwise idle machine; --threads sets both libraries' thread count.

Example (720p output; the default):
  python scripts/bench_onnx.py --lr-size 320x180 --warmup 2 --repeats 10
Quick check:
  python scripts/bench_onnx.py --lr-size 32x24 --warmup 0 --repeats 1
"""
import argparse
import os
import statistics
import tempfile
import time


import cfsrdelta_arch  # noqa: F401  (registers the archs)
import numpy as np
import torch

from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
from cfsrdelta_arch.app.export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_session
from cfsrdelta_arch.app.engine import (SREngine, load_option_file, resolve_option_path,
                                            to_deploy)


def parse_size(text):
    """'320x180' -> (h, w) = (180, 320)."""
    w, h = (int(v) for v in text.lower().split('x'))
    return h, w


def delta_network(opt_path, weights):
    """The CFSR-Delta of a train option file: trained refiner if ``weights``, else a random one
    (same cost) on the option file's backbone weights."""
    if weights:
        return SREngine.from_option_file(opt_path, weights=weights, device='cpu').net
    opt = load_option_file(opt_path)
    backbone = resolve_option_path(opt['network_g']['backbone_weights'], opt_path)
    net = build_from_options(dict(opt['network_g'], backbone_weights=backbone))
    return to_deploy(net.eval().requires_grad_(False))


def median_ms(fn, warmup, repeats):
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(name, net, x, warmup, repeats, threads, tmp):
    """One table row: (name, parameters, torch ms, onnxruntime ms, max |torch - onnx|)."""
    path = export_onnx(net, os.path.join(tmp, f'{name}.onnx'), sample_size=tuple(x.shape[-2:]))
    session = onnx_session(path, threads)
    feed = {INPUT_NAME: x.numpy()}
    with torch.inference_mode():
        ref = net(x).numpy()
        t_torch = median_ms(lambda: net(x), warmup, repeats)
    out = session.run([OUTPUT_NAME], feed)[0]
    t_ort = median_ms(lambda: session.run([OUTPUT_NAME], feed), warmup, repeats)
    return name, sum(p.numel() for p in net.parameters()), t_torch, t_ort, float(np.abs(out - ref).max())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--lr-size', default='320x180', help='LR input WxH (default 320x180 -> 1280x720 at x4)')
    p.add_argument('--cfsr-weights', default='weights/official/CFSR_x4.pth')
    p.add_argument('--delta-opt', default='options/train/train_CFSRDelta_LRRefineNet_x4.yml')
    p.add_argument('--delta-weights', help='trained refiner (or whole exported network); default: random refiner')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--threads', type=int, default=0, help='threads for both libraries (0: PyTorch default)')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    h, w = parse_size(args.lr_size)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    nets = [('CFSR_x4', SREngine.from_weights('CFSR', args.cfsr_weights, 4, device='cpu').net),
            ('CFSRDelta_x4', delta_network(args.delta_opt, args.delta_weights))]
    print(f'LR {w}x{h} -> {4 * w}x{4 * h}, {threads} thread(s), warm-up {args.warmup}, median of {args.repeats}'
          f'{"" if args.delta_weights else "; CFSR-Delta refiner random (timing only)"}')
    print(f'{"network":<14} {"params":>9} {"PyTorch ms":>11} {"ORT ms":>9} {"speed-up":>9} {"max|d|":>9}')
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in nets:
            name, n, t_torch, t_ort, diff = bench(name, net, x, args.warmup, args.repeats, threads, tmp)
            print(f'{name:<14} {n:>9,d} {t_torch:>11.1f} {t_ort:>9.1f} {t_torch / t_ort:>8.2f}x {diff:>9.1e}')


if __name__ == '__main__':
    main()
