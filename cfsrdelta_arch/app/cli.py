"""cfsrdelta-infer: super-resolve your own images (one file or a whole folder) with CFSR, LESRCNN or
CFSR-Delta.

Pick the network in one of two ways:
  --opt FILE                 a BasicSR option file (options/test/*.yml, options/train/*.yml); its
                             network_g and path.pretrain_network_g (or --weights) are used. For a
                             CFSR-Delta file, --weights is the trained refiner (experiments/<name>/
                             models/net_g_best.pth) or a whole network from scripts/export_model.py,
                             and the backbone comes from network_g.backbone_weights.
  --arch NAME --weights W --scale S
                             a single network with its default options, e.g. the official weights.

Images: PNG, JPEG, BMP, TIFF (8 or 16 bit), gray, RGB or RGBA. Each output keeps its input's
layout and bit depth: gray stays gray (the network sees the gray plane as RGB and the output is
the mean of its three channels), 16-bit stays 16-bit (unless --ext jpg/webp/bmp), RGBA keeps an
alpha plane, upscaled by bicubic interpolation (default) or by the network (--alpha network).

Large images: --tile 256 runs the image in 256x256 LR tiles (bounded memory) with --tile-overlap
pixels of context; with the default overlap the result matches whole-image inference within one
8-bit level (measured by scripts/bench_tiling.py).

Exit status: 0 when every image was written, 1 when anything failed (each failure is reported
with its file name and the remaining images are still processed), 2 for invalid arguments.

Examples:
  cfsrdelta-infer -i photo.jpg -o results/ --arch CFSR --weights weights/official/CFSR_x4.pth --scale 4
  cfsrdelta-infer -i my_photos/ -o results/x4 --opt options/test/test_CFSR_x4.yml --tile 256
  cfsrdelta-infer -i my_photos/ -o results/delta --opt options/train/train_CFSRDelta_LRRefineNet_x4.yml \\
      --weights experiments/CFSRDelta_LRRefineNet_x4/models/net_g_best.pth --self-ensemble
"""
import argparse
import os
import sys

from cfsrdelta_arch.app.engine import ALPHA_MODES, SREngine
from cfsrdelta_arch.data.lr_generation import list_images
from cfsrdelta_arch.utils.image_io import read_image, write_image
from cfsrdelta_arch.utils.inference import DEFAULT_TILE_OVERLAP

OUTPUT_EXTENSIONS = ('png', 'jpg', 'webp', 'tif', 'bmp')


def add_model_args(parser):
    """The network-choosing options (--opt | --arch/--weights/--scale, --param-key, --device),
    shared by the CLI, the export script and the benchmarks."""
    group = parser.add_argument_group('network (give --opt, or --arch with --weights and --scale)')
    group.add_argument('--opt', metavar='FILE', help='BasicSR option file whose network_g is used')
    group.add_argument('--arch', metavar='NAME', help='registered arch name, e.g. CFSR or LESRCNN')
    group.add_argument('--weights', metavar='PTH', help='checkpoint (.pth); with --opt it overrides '
                       'path.pretrain_network_g')
    group.add_argument('--scale', type=int, metavar='S', help='upscale factor of --arch (2, 3, 4)')
    group.add_argument('--param-key', metavar='KEY', help="key inside the checkpoint (default 'params'; "
                       "'params_ema' for EMA weights)")
    group.add_argument('--device', default='auto', help="'auto' (GPU if available), 'cpu', 'cuda', 'cuda:1'")


def check_model_args(parser, args):
    """Reject incomplete or conflicting network options through ``parser.error`` (exit status 2)."""
    if bool(args.opt) == bool(args.arch):
        parser.error('give either --opt FILE or --arch NAME (with --weights and --scale)')
    if args.arch and (not args.weights or not args.scale):
        parser.error('--arch needs --weights and --scale')


def engine_from_args(args, **kwargs):
    """SREngine for parsed :func:`add_model_args` options; ``kwargs`` go to SREngine."""
    kwargs.setdefault('device', args.device)
    if args.opt:
        return SREngine.from_option_file(args.opt, weights=args.weights, param_key=args.param_key, **kwargs)
    return SREngine.from_weights(args.arch, args.weights, args.scale, param_key=args.param_key or 'params',
                                 **kwargs)


def build_parser():
    p = argparse.ArgumentParser(prog='cfsrdelta-infer', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-i', '--input', required=True, help='an image file or a folder of images (not recursive)')
    p.add_argument('-o', '--output', default='results/infer', help='output folder (default: results/infer)')
    add_model_args(p)
    run = p.add_argument_group('inference')
    run.add_argument('--tile', type=int, default=0, metavar='N',
                     help='LR tile size in pixels; 0 (default) runs whole images (fastest); use e.g. 256 '
                          'when memory runs out on large images')
    run.add_argument('--tile-overlap', type=int, default=DEFAULT_TILE_OVERLAP, metavar='N',
                     help=f'LR pixels of context around each tile (default {DEFAULT_TILE_OVERLAP}: '
                          'matches whole-image output within 1/255)')
    run.add_argument('--self-ensemble', action='store_true',
                     help='average the 8 flipped/rotated versions: slightly better, 8x slower')
    run.add_argument('--alpha', choices=ALPHA_MODES, default='bicubic',
                     help="how the alpha plane of RGBA images is upscaled (default 'bicubic')")
    out = p.add_argument_group('output files')
    out.add_argument('--suffix', default='', help="added to each file name: photo.png -> photo_<suffix>.png "
                     "(default: none)")
    out.add_argument('--ext', choices=('auto',) + OUTPUT_EXTENSIONS, default='png',
                     help="output format (default png: lossless, keeps 16 bits and alpha); 'auto' keeps each "
                          "input's format; jpg drops alpha; jpg/webp/bmp store 8 bits")
    return p


def list_inputs(path):
    """Input image paths: ``[path]`` for a file, the images directly in a folder (sorted) otherwise."""
    if os.path.isdir(path):
        return list_images(path)
    if os.path.isfile(path):
        return [path]
    raise FileNotFoundError(f'no such file or folder: {path}')


def output_path(in_path, out_dir, suffix, ext):
    """``out_dir/<stem>[_<suffix>].<ext>``; ext 'auto' keeps the input's extension."""
    stem, in_ext = os.path.splitext(os.path.basename(in_path))
    ext = in_ext.lstrip('.') if ext == 'auto' else ext
    return os.path.join(out_dir, f'{stem}_{suffix}.{ext}' if suffix else f'{stem}.{ext}')


def plan_outputs(inputs, out_dir, suffix, ext):
    """Pair each input with its output path.

    Returns:
        (list[tuple[str, str]], list[str]): the (input, output) pairs to run, and one error message
        per input skipped because its output would overwrite an input or another input's output.
    """
    inputs_abs = {os.path.abspath(p) for p in inputs}
    seen, jobs, errors = {}, [], []
    for src in inputs:
        dst = output_path(src, out_dir, suffix, ext)
        key = os.path.abspath(dst)
        if key in inputs_abs:
            errors.append(f'{src}: output {dst} would overwrite an input; use --suffix or another -o')
        elif key in seen:
            errors.append(f'{src}: output {dst} is also the output of {seen[key]}; use --ext auto or rename')
        else:
            seen[key] = src
            jobs.append((src, dst))
    return jobs, errors


def process(engine, src, dst):
    """Read, super-resolve and write one image; returns the output's (H, W[, C])."""
    sr = engine.enhance(read_image(src))
    write_image(dst, sr)
    return sr.shape


def report(message):
    """One line on stderr that does not break a running progress bar."""
    from tqdm import tqdm
    tqdm.write(message, file=sys.stderr)


def main(argv=None):
    """Run the CLI; returns the exit status (0: all written, 1: something failed)."""
    from tqdm import tqdm

    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_args(parser, args)
    if args.tile < 0 or args.tile_overlap < 0:
        parser.error('--tile and --tile-overlap must be >= 0')
    try:
        inputs = list_inputs(args.input)
        engine = engine_from_args(args, tile_size=args.tile, tile_overlap=args.tile_overlap,
                                  self_ensemble=args.self_ensemble, alpha_mode=args.alpha)
    except (OSError, ValueError, KeyError) as err:  # CheckpointError is a ValueError
        print(f'error: {err}', file=sys.stderr)
        return 1
    jobs, errors = plan_outputs(inputs, args.output, args.suffix, args.ext)
    for message in errors:
        print(f'error: {message}', file=sys.stderr)
    print(f'{engine}: {len(jobs)} image(s) -> {args.output}', file=sys.stderr)
    written = 0
    for src, dst in tqdm(jobs, unit='img', disable=not os.path.isdir(args.input)):
        try:
            process(engine, src, dst)
            written += 1
        except (OSError, ValueError) as err:  # ImageReadError is an OSError; it names the file
            report(f'error: {err}' if src in str(err) else f'error: {src}: {err}')
        except RuntimeError as err:  # e.g. out of memory: the next image may still fit
            report(f'error: {src}: {str(err).splitlines()[0]} (a smaller --tile may help)')
    failed = len(inputs) - written
    print(f'{written} written, {failed} failed', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
