"""Export a network in deploy form (CFSR train-form edge branches merged) as a whole-network .pth
and/or an ONNX file with dynamic height and width, then check the ONNX file in onnxruntime.

The network is chosen and loaded exactly as by cfsrdelta-infer (--opt FILE [--weights W], or
--arch NAME --weights W --scale S). The .pth holds {'params': state_dict}; for CFSR-Delta it is
the whole network (backbone.* and refiner.*), usable as --weights with the same option file.
A deploy-form .pth loads into CFSR built with deploy: true (the default) or deploy: false.

Examples:
  python scripts/export_model.py --arch CFSR --weights weights/official/CFSR_x4.pth --scale 4 \\
      --onnx exported/CFSR_x4.onnx
  python scripts/export_model.py --opt options/train/train_CFSRDelta_LRRefineNet_x4.yml \\
      --weights experiments/CFSRDelta_LRRefineNet_x4/models/net_g_best.pth \\
      --pth exported/CFSRDelta_x4.pth --onnx exported/CFSRDelta_x4.onnx
"""
import argparse
import sys

from cfsrdelta_arch.app.cli import (add_debug_arg, add_model_args, check_model_args, check_writable_file,
                                    engine_from_args, run_main)
from cfsrdelta_arch.app.export import DEFAULT_OPSET, check_onnx, export_onnx, export_pth

ONNX_TOLERANCE = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.set_defaults(device='cpu')
    out = p.add_argument_group('outputs (at least one)')
    out.add_argument('--pth', metavar='FILE', help='whole-network checkpoint to write')
    out.add_argument('--onnx', metavar='FILE', help='ONNX file to write (dynamic batch, height, width)')
    out.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset (default {DEFAULT_OPSET})')
    out.add_argument('--no-check', action='store_true', help='skip the onnxruntime comparison')
    add_debug_arg(p)
    args = p.parse_args(argv)
    check_model_args(p, args)
    if not args.pth and not args.onnx:
        p.error('nothing to do: give --pth and/or --onnx')
    return args


def export(args):
    """Check the output paths, load the network, write the files; returns the exit status."""
    for label, path in ((f'--pth {args.pth}', args.pth), (f'--onnx {args.onnx}', args.onnx)):
        if path:
            check_writable_file(path, label)
    engine = engine_from_args(args)
    net = engine.net
    print(f'{type(net).__name__} x{engine.scale}: {sum(p.numel() for p in net.parameters()):,d} parameters')
    if args.pth:
        print(f'wrote {export_pth(net, args.pth)}')
    if args.onnx:
        print(f'wrote {export_onnx(net, args.onnx, args.opset)} (opset {args.opset})')
        if not args.no_check:
            results = check_onnx(net, args.onnx)
            for (h, w), diff in results:
                print(f'onnxruntime vs PyTorch, LR {w}x{h}: max |diff| {diff:.2e}')
            if max(d for _, d in results) > ONNX_TOLERANCE:
                print(f'error: ONNX output differs from PyTorch by more than {ONNX_TOLERANCE}', file=sys.stderr)
                return 1
    return 0


def main(argv=None):
    """Returns the exit status: 0 on success, 1 on an error (one line) or a failed ONNX check."""
    return run_main(export, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
