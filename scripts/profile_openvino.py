"""Where OpenVINO's time goes, per kind of layer: CFSR x4 (or any option file's network) on a 320x180
LR frame (1280x720 output), compiled as `--backend openvino` compiles it, with per-node counters.

The table shows each conv kind's multiply-add rate against this machine's fp32 peak (a 4096^2
torch matmul, same run) and the time of the layers that do no multiply-adds worth counting
(LayerNorm's reductions, fused element-wise chains): what caps the whole network's fraction of peak.

  python scripts/profile_openvino.py                  # idle machine, 2 threads
  python scripts/profile_openvino.py --opt options/test/test_CFSRDelta_BPRefineNet_x4.yml
"""
import argparse
import sys

import torch

from cfsrdelta_arch.app.benchmark import format_layer_profile, matmul_macs_per_second, openvino_layer_profile
from cfsrdelta_arch.app.engine import network_from_option_file
from cfsrdelta_arch.utils.flops import count_conv_macs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--opt', default='options/test/test_CFSR_x4.yml', help='option file of the network')
    p.add_argument('--size', type=int, nargs=2, default=(180, 320), metavar=('H', 'W'), help='LR size (180 320)')
    p.add_argument('--threads', type=int, default=2, help='threads (default 2)')
    p.add_argument('--repeats', type=int, default=9, help='timed runs, median reported (default 9)')
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or min(args.size) < 1:
        p.error('--threads, --repeats and --size must be >= 1')
    torch.set_num_threads(args.threads)
    net, _ = network_from_option_file(args.opt)
    lr = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
    peak = matmul_macs_per_second()
    seconds, rows = openvino_layer_profile(net.eval(), lr, args.threads, args.repeats, peak)
    macs = count_conv_macs(net, lr)
    print(f'{args.opt}: {args.size[0]}x{args.size[1]} LR, {args.threads} thread(s): median {seconds * 1000:.0f} ms, '
          f'{macs / 1e9:.2f} GMAC -> {macs / seconds / 1e9:.1f} GMAC/s = {macs / seconds / peak:.0%} of the fp32 peak '
          f'({peak / 1e9:.1f} GMAC/s, 4096^2 matmul)')
    print(format_layer_profile(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
