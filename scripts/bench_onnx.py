"""CPU latency of PyTorch vs onnxruntime for CFSR x4 and CFSR-Delta x4 on one LR frame.

Both networks are loaded as by cfsrdelta-infer (deploy form), exported with
cfsrdelta_arch.app.export to a temporary ONNX file, and timed on the same random LR input
(1, 3, H, W): warm-up runs, then the median of the timed repeats, whole frame (no tiling, no
self-ensemble). CFSR-Delta is the network of --delta-opt (default: the shipped BPRefineNet x4).
Run on an otherwise idle machine; --threads sets both libraries' thread count.

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


import numpy as np
import torch

from cfsrdelta_arch.app.engine import SREngine
from cfsrdelta_arch.app.export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_session
from cfsrdelta_arch.utils.tables import markdown_table


def parse_size(text):
    """'320x180' -> (h, w) = (180, 320)."""
    w, h = (int(v) for v in text.lower().split('x'))
    return h, w


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
    p.add_argument('--delta-opt', default='options/test/test_CFSRDelta_BPRefineNet_x4.yml',
                   help='option file of the CFSR-Delta to time (default: the shipped BPRefineNet x4)')
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
            ('CFSRDelta_x4', SREngine.from_option_file(args.delta_opt, device='cpu').net)]
    print(f'LR {w}x{h} -> {4 * w}x{4 * h}, {threads} thread(s), warm-up {args.warmup}, median of {args.repeats}')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in nets:
            name, n, t_torch, t_ort, diff = bench(name, net, x, args.warmup, args.repeats, threads, tmp)
            rows.append([name, f'{n:,d}', f'{t_torch:.1f}', f'{t_ort:.1f}', f'{t_torch / t_ort:.2f}x', f'{diff:.1e}'])
    print(markdown_table(['network', 'params', 'PyTorch ms', 'ORT ms', 'speed-up', 'max abs diff'], rows))


if __name__ == '__main__':
    main()
