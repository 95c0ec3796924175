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

Images: PNG, JPEG, BMP, TIFF (8 or 16 bit), gray, gray+alpha, RGB or RGBA. Each output keeps its
input's layout and bit depth: gray stays gray (the network sees the gray plane as RGB and the
output is the mean of its three channels), 16-bit stays 16-bit (unless --ext jpg/webp/bmp), an
alpha plane is kept, upscaled by bicubic interpolation (default) or by the network (--alpha
network). Gray+alpha is written as gray+alpha to PNG (8 or 16 bit), as gray to JPEG, as RGBA with
R = G = B otherwise.

Large images: --tile 256 runs the image in 256x256 LR tiles with --tile-overlap pixels of context;
memory then grows with the 8/16-bit output only (float data is held per tile). With the default
overlap the result matches whole-image inference within one 8-bit level (scripts/bench_tiling.py).

Speed: --backend openvino (or onnxruntime) runs the network in that CPU runtime instead of PyTorch,
within 1e-4 of it; the compiled model is cached in $CFSRDELTA_CACHE (default ~/.cache/cfsrdelta) and
reused. OpenVINO compiles once per input size (seconds; then cached), so with images of many sizes
use --tile: every tile has the same size. The CLI also keeps freed memory in glibc's heap for reuse
instead of returning every feature map to the kernel (utils/allocator.py: large whole images run up
to 3.5x faster with the torch backend, at up to a third more peak memory); setting any MALLOC_*
variable, e.g. MALLOC_MMAP_MAX_=65536 (glibc's default), keeps glibc's own behaviour.

Blurred or noisy photos: a non-blind network (--opt options/test/test_CFSRDelta_NonBlind_x4.yml, or
USRNet) is told the degradation: --kernel FILE (.npy, .mat, or a grayscale image; normalised) or
--blur-sigma S (an isotropic Gaussian of width S HR pixels), --noise N (σ on the 0-255 scale), and
--degradation gaussian8 (blur, then bicubic downsampling; default) or classical (blur, then taking
every s-th pixel). Without them the non-blind delta is the shipped CFSR-Delta (clean bicubic LR).

Every output file is written whole or not at all (a temporary file renamed into place).

Exit status: 0 when every image was written, 1 when anything failed (each failure is reported
with its file name and the remaining images are still processed; a bad option, network file or
output folder stops the run before any image is computed, with one line saying what to do), 2 for
invalid arguments, 130 when interrupted (Ctrl-C; the images written so far are complete).

Examples:
  cfsrdelta-infer -i photo.jpg -o results/ --arch CFSR --weights weights/official/CFSR_x4.pth --scale 4
  cfsrdelta-infer -i my_photos/ -o results/x4 --opt options/test/test_CFSR_x4.yml --tile 256
  cfsrdelta-infer -i my_photos/ -o results/delta --opt options/train/train_CFSRDelta_LRRefineNet_x4.yml \\
      --weights experiments/CFSRDelta_LRRefineNet_x4/models/net_g_best.pth --self-ensemble
"""
import argparse
import os
import re
import sys
import tempfile
import traceback

import cv2

from cfsrdelta_arch.app.backends import BACKENDS
from cfsrdelta_arch.app.engine import ALPHA_MODES, Degradation, SREngine
from cfsrdelta_arch.archs.degradation_psf import DEGRADATIONS
from cfsrdelta_arch.data.degradations import check_noise_sigma, gaussian_kernel, load_kernel
from cfsrdelta_arch.data.lr_generation import list_images
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse
from cfsrdelta_arch.utils.image_io import read_image, write_image
from cfsrdelta_arch.utils.inference import DEFAULT_TILE_OVERLAP

OUTPUT_EXTENSIONS = ('png', 'jpg', 'webp', 'tif', 'bmp')
DEBUG_HINT = '--debug shows the traceback'


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
    """SREngine for parsed :func:`add_model_args` options; ``kwargs`` go to SREngine.

    Raises:
        ValueError | OSError: one line naming the file or option; an unexpected error while
            loading (e.g. a file torch cannot read) is reported as one naming the network files.
    """
    kwargs.setdefault('device', args.device)
    try:
        if args.opt:
            return SREngine.from_option_file(args.opt, weights=args.weights, param_key=args.param_key, **kwargs)
        return SREngine.from_weights(args.arch, args.weights, args.scale, param_key=args.param_key or 'params',
                                     **kwargs)
    except Exception as err:
        if is_one_line_error(err):
            raise
        source = ' '.join(f'{flag} {value}' for flag, value in (('--opt', args.opt), ('--arch', args.arch),
                                                                 ('--weights', args.weights)) if value)
        raise ValueError(f'cannot load the network of {source} ({foreign_error(err)}); check that the files are '
                         f'complete checkpoints of this network ({DEBUG_HINT})') from err


def add_debug_arg(parser):
    """--debug: let :func:`run_main` show tracebacks."""
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error instead of one line')


def is_one_line_error(err):
    """Whether ``err`` is one of the package's one-line errors for user mistakes (a ValueError or
    OSError whose message is one line, naming the file or option and what to do)."""
    text = str(err).strip()
    return isinstance(err, (ValueError, OSError)) and bool(text) and '\n' not in text


def foreign_error(err):
    """Any other error in one line: its type and the first sentence of its message."""
    lines = str(err).strip().splitlines()
    first = re.split(r'(?<=[.!?])\s', lines[0])[0] if lines else '(no message)'
    return f'{type(err).__name__}: {first}'


def run_main(body, args):
    """Run ``body(args)`` as a command and return its exit status: an error is one line on stderr
    and status 1 (the traceback with ``args.debug``), Ctrl-C is status 130."""
    try:
        return body(args)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        message = str(err).strip() if is_one_line_error(err) else f'{foreign_error(err)} ({DEBUG_HINT})'
        print(f'error: {message}', file=sys.stderr)
        return 1


def check_writable_folder(folder, label):
    """Raise ValueError (one line starting with ``label``, e.g. '-o out') unless files can be
    created in ``folder``: it is a folder, or its nearest existing parent is one, and a probe file
    can be created (and is removed) there. Only a real write tells: permission bits do not stop
    root, but read-only mounts and special file systems do. The folder itself is not created."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        shown = folder if existing == os.path.abspath(folder) else existing
        raise ValueError(f'{label}: {shown} is a file, not a folder; choose another output folder')
    try:
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=existing)
    except OSError as err:
        raise ValueError(f'{label}: cannot create files in {existing} ({err.strerror}); '
                         'choose a writable output folder') from None
    os.close(fd)
    os.remove(probe)


def check_writable_file(path, label):
    """Raise ValueError (one line starting with ``label``) unless ``path`` can be written as a file."""
    if os.path.isdir(path):
        raise ValueError(f'{label}: is a folder; give a file name')
    check_writable_folder(os.path.dirname(os.path.abspath(path)), label)


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
    run.add_argument('--backend', choices=BACKENDS, default='torch',
                     help="runtime of the network (default torch); onnxruntime and openvino run on the CPU, "
                          "faster (see above)")
    run.add_argument('--threads', type=int, default=0, metavar='N',
                     help='CPU threads of the onnxruntime/openvino backend (default 0: all cores)')
    blur = p.add_argument_group('degradation of the input (non-blind networks only)')
    blur.add_argument('--kernel', metavar='FILE', help='blur kernel: .npy, .mat (first 2-D array or cell) or a '
                      'grayscale image; normalised to sum 1')
    blur.add_argument('--blur-sigma', type=float, metavar='S', help='isotropic Gaussian blur of width S HR pixels '
                      '(instead of --kernel)')
    blur.add_argument('--noise', type=float, metavar='N', help='noise level σ on the 0-255 scale (default 0)')
    blur.add_argument('--degradation', choices=DEGRADATIONS, help='how the LR was made from the blurred image: '
                      'gaussian8 (bicubic downsampling, default) or classical (every s-th pixel)')
    out = p.add_argument_group('output files')
    out.add_argument('--suffix', default='', help="added to each file name: photo.png -> photo_<suffix>.png "
                     "(default: none)")
    out.add_argument('--ext', choices=('auto',) + OUTPUT_EXTENSIONS, default='png',
                     help="output format (default png: lossless, keeps 16 bits and alpha); 'auto' keeps each "
                          "input's format; jpg drops alpha; jpg/webp/bmp store 8 bits")
    add_debug_arg(p)
    return p


def degradation_from_args(args):
    """The :class:`Degradation` of --kernel/--blur-sigma/--noise/--degradation, or None when none is given."""
    if args.kernel is None and args.blur_sigma is None and args.noise is None and args.degradation is None:
        return None
    kernel = load_kernel(args.kernel) if args.kernel else None
    kernel = gaussian_kernel(args.blur_sigma) if args.blur_sigma is not None else kernel
    return Degradation(kernel, args.noise or 0.0, args.degradation or 'gaussian8')


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
    # OpenCV's order end to end: the engine writes its tiles into a BGR array, which OpenCV encodes
    # as it is (an RGB array would need a whole swapped copy for the encoder).
    sr = engine.enhance(read_image(src, bgr=True), channel_order='bgr')
    write_image(dst, sr, bgr=True)
    return sr.shape


def image_error(src, err):
    """The one-line report of an image that failed with ``err``."""
    if isinstance(err, RuntimeError):  # e.g. out of memory
        return f'error: {src}: {str(err).splitlines()[0]} (a smaller --tile may help)'
    return f'error: {err}' if src in str(err) else f'error: {src}: {err}'  # ImageReadError names the file


def report(message):
    """One line on stderr that does not break a running progress bar."""
    from tqdm import tqdm
    tqdm.write(message, file=sys.stderr)


def infer(args):
    """The CLI's work for parsed arguments; returns the exit status (see the module docstring).

    Everything that can fail for the whole run (output folder, network options and files, device)
    is checked before the first image is computed.
    """
    from tqdm import tqdm

    keep_freed_memory_for_reuse()
    check_writable_folder(args.output, f'-o {args.output}')
    inputs = list_inputs(args.input)
    jobs, errors = plan_outputs(inputs, args.output, args.suffix, args.ext)
    written = 0
    try:
        engine = engine_from_args(args, tile_size=args.tile, tile_overlap=args.tile_overlap,
                                  self_ensemble=args.self_ensemble, alpha_mode=args.alpha,
                                  backend=args.backend, threads=args.threads, degradation=degradation_from_args(args))
        for message in errors:
            print(f'error: {message}', file=sys.stderr)
        print(f'{engine}: {len(jobs)} image(s) -> {args.output}', file=sys.stderr)
        with tqdm(jobs, unit='img', disable=not os.path.isdir(args.input)) as bar:
            for src, dst in bar:
                try:
                    process(engine, src, dst)
                    written += 1
                except (OSError, ValueError, RuntimeError) as err:  # the next image may still work
                    report(image_error(src, err))
                    if args.debug:
                        traceback.print_exc()
    except KeyboardInterrupt:
        print(f'interrupted: {written} of {len(jobs)} written', file=sys.stderr)
        return 130
    failed = len(inputs) - written
    print(f'{written} written, {failed} failed', file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    """Run the CLI; returns the exit status (0: all written, 1: something failed, 130: interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_args(parser, args)
    if args.tile < 0 or args.tile_overlap < 0 or args.threads < 0:
        parser.error('--tile, --tile-overlap and --threads must be >= 0')
    if args.kernel and args.blur_sigma is not None:
        parser.error('give either --kernel FILE or --blur-sigma S, not both')
    checks = (('--noise', args.noise, check_noise_sigma), ('--blur-sigma', args.blur_sigma, gaussian_kernel))
    for flag, value, check in checks:
        try:
            if value is not None:
                check(value)
        except ValueError as err:
            parser.error(f'{flag}: {err}')
    # an unreadable image is reported in one line; OpenCV would print its own log lines first
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return run_main(infer, args)
    finally:
        cv2.utils.logging.setLogLevel(level)


if __name__ == '__main__':
    sys.exit(main())
