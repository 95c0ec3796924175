"""Figures comparing CFSR with CFSR-Delta on one benchmark HR folder (for docs/figures).

Every HR image of --hr is evaluated as in the results table: mod-crop to a multiple of the scale,
MATLAB-compatible bicubic downsampling to the protocol LR, the frozen CFSR backbone and CFSR-Delta
(the same backbone + --refiner) on that LR, PSNR on the Y channel (BT.601, BasicSR's
calculate_psnr) with crop_border = scale, one pass (no self-ensemble). Three kinds of PNG are
written into --out (<set> is the folder name, e.g. Set14):

  <set>_x<s>_<refiner>_<image>_panels.png
      one per chosen image: HR | bicubic | CFSR | CFSR-Delta. Top row: the whole image with the
      zoom box drawn and the PSNR in the title; bottom row: the zoomed box and the PSNR inside it.
  <set>_x<s>_<refiner>_error_maps.png
      one row per chosen image: |SR - HR| on the Y channel (8-bit levels) for CFSR and CFSR-Delta
      with a shared colour scale, and the gain map |err CFSR| - |err CFSR-Delta| (blue: CFSR-Delta
      is closer to HR, red: CFSR is). The scale-pixel border that PSNR ignores is cut off.
  <set>_x<s>_<refiner>_gain.png
      PSNR gain (CFSR-Delta minus CFSR, dB) of every image of the folder, with the mean as a line.

Chosen images: those named by --images, else the --top images with the largest PSNR gain.
Zoom box: --box x,y,w,h (HR pixels, applied to every chosen image), else the square where the two
methods' Y errors differ most (largest |mean gain| over the box, border excluded); that can be a
place where CFSR is the better one, which the PSNR inside the box then shows.
Networks come from <options-dir>/test_CFSR_x<s>.yml and test_CFSRDelta_<refiner>_x<s>.yml; they
run on the CPU. PNGs larger than --max-kb are reduced to a 256-colour palette, then to a lower
dpi, until they fit. Per-image progress goes to stderr, the written paths to stdout.

Example:
  python scripts/make_figures.py --hr ../shared/datasets/benchmark/Set14/HR --scale 4
  python scripts/make_figures.py --hr ../shared/datasets/benchmark/Set5/HR --images butterfly --box 100,60,64,64
"""
import argparse
import io
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401  (must precede basicsr imports)
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import torch
from basicsr.metrics import calculate_psnr
from basicsr.metrics.metric_util import to_y_channel
from basicsr.utils.matlab_functions import imresize
from matplotlib.patches import Rectangle
from PIL import Image

from cfsrdelta_arch.app.benchmark import BACKBONE, evaluate_image, load_networks, method_outputs
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, list_images, mod_crop, read_image_color

DELTA = 'CFSR-Delta'
METHODS = ('HR', 'Bicubic', BACKBONE, DELTA)  # panel order
BOX_COLOUR = '#ffd400'
ERROR_PERCENTILE = 99.5  # colour scales end here so that a few extreme pixels do not wash out the maps
COLOUR_LEVELS = 32  # steps per colour map: readable colour bars, and the PNG palette holds both maps exactly


# ----------------------------------------------------------------------------------------- inputs

def dataset_name(hr_folder):
    """'Set14' for '.../Set14/HR' (the folder above an 'HR' folder), else the folder's own name."""
    folder = os.path.basename(os.path.normpath(os.path.abspath(hr_folder)))
    if folder.lower() == 'hr':
        folder = os.path.basename(os.path.dirname(os.path.normpath(os.path.abspath(hr_folder))))
    return folder


def load_hr_folder(folder):
    """[(stem, uint8 BGR image)] of every image in ``folder``, sorted by file name."""
    return [(os.path.splitext(os.path.basename(p))[0], read_image_color(p)) for p in list_images(folder)]


def parse_box(text):
    """'x,y,w,h' -> (x, y, w, h) ints (argparse type); w and h must be positive."""
    try:
        box = tuple(int(v) for v in text.split(','))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        raise argparse.ArgumentTypeError(f"expected x,y,w,h with x,y >= 0 and w,h > 0, got '{text}'")
    return box


def check_box(box, shape, name):
    """Raise ValueError when ``box`` = (x, y, w, h) does not lie inside an image of ``shape``."""
    x, y, w, h = box
    if x + w > shape[1] or y + h > shape[0]:
        raise ValueError(f'--box {x},{y},{w},{h} does not fit {name} ({shape[1]}x{shape[0]} after mod-crop)')


def select_images(gains, requested=None, top=2):
    """Names of the images that get panels.

    Args:
        gains (dict): {image stem: PSNR gain in dB}, in folder order.
        requested (list[str] | None): stems or file names given by the user; kept in that order.
        top (int): without ``requested``, this many images with the largest gain.

    Raises:
        ValueError: a requested image is not in ``gains``.
    """
    if not requested:
        return sorted(gains, key=gains.get, reverse=True)[:top]
    stems = [os.path.splitext(r)[0] for r in requested]
    unknown = [r for r, s in zip(requested, stems) if s not in gains]
    if unknown:
        raise ValueError(f'--images: {", ".join(unknown)} not in the folder (it has {", ".join(gains)})')
    return list(dict.fromkeys(stems))


# ------------------------------------------------------------------------------------- computing

def evaluate_folder(images, scale, backbone, refiner_name, delta):
    """{stem: (PSNR CFSR, PSNR CFSR-Delta)} of every image, via benchmark.evaluate_image (single
    pass), with one progress line per image on stderr."""
    psnrs = {}
    width = max(len(name) for name, _ in images)
    for i, (name, hr) in enumerate(images):
        result = evaluate_image(hr, scale, backbone, {refiner_name: delta}, ensemble=False)
        psnrs[name] = (result[(BACKBONE, 'single')][0], result[(refiner_name, 'single')][0])
        psnr_base, psnr_delta = psnrs[name]
        print(f'[{i + 1:{len(str(len(images)))}d}/{len(images)}] {name:<{width}}  {BACKBONE} {psnr_base:6.3f} dB  '
              f'{DELTA} {psnr_delta:6.3f} dB  gain {psnr_delta - psnr_base:+.3f} dB', file=sys.stderr, flush=True)
    return psnrs


def bicubic_upsample(lr, scale):
    """uint8 BGR LR -> uint8 BGR, ``scale`` times larger, MATLAB-compatible bicubic (the baseline)."""
    up = imresize(lr.astype(np.float64) / 255.0, scale)
    return np.clip(np.floor(up * 255.0 + 0.5), 0, 255).astype(np.uint8)


@torch.inference_mode()
def figure_images(hr, scale, backbone, delta):
    """{'HR', 'Bicubic', 'CFSR', 'CFSR-Delta'}: uint8 BGR images of the mod-cropped ``hr``, the LR
    made per the protocol and the SR computed by benchmark.method_outputs (as in the tables)."""
    hr = mod_crop(hr, scale)
    lr = bicubic_downsample(hr, scale)
    base, refined = method_outputs(backbone, {DELTA: delta}, image_to_tensor(lr, bgr=True))
    return {'HR': hr, 'Bicubic': bicubic_upsample(lr, scale), BACKBONE: tensor_to_image(base, bgr=True),
            DELTA: tensor_to_image(refined, bgr=True)}


def psnr_y(img, hr, scale):
    """PSNR of uint8 BGR ``img`` against ``hr`` per the protocol (Y channel, crop_border = scale)."""
    return calculate_psnr(img, hr, crop_border=scale, test_y_channel=True)


def y_error(img, hr):
    """|Y(img) - Y(hr)| in 8-bit levels (float, H x W); Y as in the PSNR (BT.601, BasicSR)."""
    return np.abs(to_y_channel(img) - to_y_channel(hr))[..., 0].astype(np.float64)


def crop_border(img, border):
    """``img`` without ``border`` pixels on each side (the part PSNR looks at)."""
    return img[border:img.shape[0] - border, border:img.shape[1] - border] if border else img


def box_sums(values, size):
    """Sum of ``values`` (H x W) over every size x size window; (H - size + 1, W - size + 1) array,
    entry [y, x] for the window whose top-left corner is (x, y)."""
    integral = np.pad(values.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])


def default_box_size(shape, border):
    """Side of the automatic zoom box: a sixth of the shorter side, at least 8, within the border."""
    inner = min(shape[0], shape[1]) - 2 * border
    return max(1, min(inner, max(8, round(min(shape[:2]) / 6))))


def choose_box(gain, border, size):
    """(x, y, size, size) square, ``border`` pixels away from the edges, where the mean of ``gain``
    (|err CFSR| - |err CFSR-Delta|) is largest in magnitude, i.e. the methods differ most."""
    sums = np.abs(box_sums(crop_border(gain, border), size))
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x) + border, int(y) + border, size, size


def prepare_figure_data(name, hr, scale, backbone, delta, box=None):
    """Everything the panels and error maps of one image need.

    Returns:
        dict: name, images ({method: uint8 BGR}), psnr ({method: dB, no 'HR'}), box_psnr (the same
        inside the box, no border crop), err_base and err_delta (Y errors), gain (err_base -
        err_delta), box (x, y, w, h in HR pixels).
    """
    images = figure_images(hr, scale, backbone, delta)
    hr = images['HR']
    if box is not None:
        check_box(box, hr.shape, name)
    err_base, err_delta = y_error(images[BACKBONE], hr), y_error(images[DELTA], hr)
    gain = err_base - err_delta
    if box is None:
        box = choose_box(gain, scale, default_box_size(hr.shape, scale))
    x, y, w, h = box
    return {'name': name, 'images': images, 'psnr': {m: psnr_y(images[m], hr, scale) for m in METHODS[1:]},
            'box_psnr': {m: psnr_y(images[m][y:y + h, x:x + w], hr[y:y + h, x:x + w], 0) for m in METHODS[1:]},
            'err_base': err_base, 'err_delta': err_delta, 'gain': gain, 'box': box}


# -------------------------------------------------------------------------------------- plotting

def to_rgb(img):
    """uint8 BGR -> RGB for matplotlib."""
    return np.ascontiguousarray(img[:, :, ::-1])


def draw_box(ax, box, offset=0, linewidth=1.5):
    """Outline (x, y, w, h) on ``ax``; ``offset`` is subtracted from x and y (cropped views)."""
    x, y, w, h = box
    ax.add_patch(Rectangle((x - offset - 0.5, y - offset - 0.5), w, h, fill=False, edgecolor=BOX_COLOUR,
                           linewidth=linewidth))


def psnr_label(method, psnrs, digits):
    """'23.521 dB (+0.017)': PSNR of ``method`` in ``psnrs``, with the gain over CFSR for CFSR-Delta."""
    text = f'{psnrs[method]:.{digits}f} dB'
    if method == DELTA:
        text += f' ({psnrs[DELTA] - psnrs[BACKBONE]:+.{digits}f})'
    return text


def panel_title(method, data):
    """Column title above the whole image: method and PSNR of the whole image."""
    if method == 'HR':
        return 'HR (ground truth)\nPSNR on Y:'
    return f'{method}\n{psnr_label(method, data["psnr"], 3)}'


def zoom_label(method, data):
    """Caption below the zoomed box: PSNR inside the box."""
    if method == 'HR':
        return 'PSNR in the box:'
    return psnr_label(method, data['box_psnr'], 3)


def plot_panels(data, title, column_width=3.0):
    """Figure: one column per method, the whole image (box drawn) above the zoomed box."""
    h, w = data['images']['HR'].shape[:2]
    bx, by, bw, bh = data['box']
    full_h, zoom_h = column_width * h / w, column_width * bh / bw
    head, column_title, gap, foot = 0.35, 0.5, 0.08, 0.3  # inches: titles, between the rows, captions
    fig_h = head + column_title + full_h + gap + zoom_h + foot
    fig = plt.figure(figsize=(len(METHODS) * column_width + 0.05 * (len(METHODS) + 1), fig_h))
    grid = fig.add_gridspec(2, len(METHODS), height_ratios=[full_h, zoom_h], left=0.005, right=0.995,
                            bottom=foot / fig_h, top=1 - (head + column_title) / fig_h,
                            hspace=gap / ((full_h + zoom_h) / 2), wspace=0.02)
    for j, method in enumerate(METHODS):
        img = to_rgb(data['images'][method])
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(img, interpolation='antialiased')
        draw_box(ax, data['box'])
        ax.set_title(panel_title(method, data), fontsize=11)
        ax.set_axis_off()
        zoom = fig.add_subplot(grid[1, j])
        zoom.imshow(img[by:by + bh, bx:bx + bw], interpolation='nearest')
        zoom.set_xticks([])
        zoom.set_yticks([])
        zoom.set_xlabel(zoom_label(method, data), fontsize=11)
        for spine in zoom.spines.values():
            spine.set_edgecolor(BOX_COLOUR)
            spine.set_linewidth(2)
    fig.suptitle(title, fontsize=12, y=1 - 0.1 / fig_h, va='top')
    return fig


def plot_error_maps(rows, scale, title, column_width=3.0):
    """Figure: per image (row) |Y error| of CFSR and CFSR-Delta (shared scale) and their gain map.

    The ``scale``-pixel border that PSNR ignores is cut off; the zoom box is drawn on every map.
    """
    error_cmap = matplotlib.colormaps['inferno'].resampled(COLOUR_LEVELS)
    gain_cmap = matplotlib.colormaps['RdBu'].resampled(COLOUR_LEVELS)
    smooth = {'interpolation': 'antialiased', 'interpolation_stage': 'data'}  # averages errors, not colours
    aspects = [crop_border(r['gain'], scale).shape[0] / crop_border(r['gain'], scale).shape[1] for r in rows]
    heights = [column_width * a + 0.6 for a in aspects]
    fig = plt.figure(figsize=(3 * column_width + 1.6, sum(heights) + 0.5), layout='constrained')
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1, height_ratios=heights))
    for sub, data in zip(subfigs, rows):
        errs = [crop_border(data['err_base'], scale), crop_border(data['err_delta'], scale)]
        gain = crop_border(data['gain'], scale)
        vmax = max(float(np.percentile(np.concatenate([e.ravel() for e in errs]), ERROR_PERCENTILE)), 1e-6)
        glim = max(float(np.percentile(np.abs(gain), ERROR_PERCENTILE)), 1e-6)
        axes = sub.subplots(1, 3)
        for ax, err, method in zip(axes, errs, (BACKBONE, DELTA)):
            im = ax.imshow(err, cmap=error_cmap, vmin=0, vmax=vmax, **smooth)
            ax.set_title(f'{data["name"]}: |{method} - HR|\n{data["psnr"][method]:.3f} dB', fontsize=10)
        sub.colorbar(im, ax=axes[:2], shrink=0.85, extend='max', label='|error| on Y (8-bit levels)')
        gim = axes[2].imshow(gain, cmap=gain_cmap, vmin=-glim, vmax=glim, **smooth)
        axes[2].set_title(f'gain map\n|err {BACKBONE}| - |err {DELTA}|', fontsize=10)
        sub.colorbar(gim, ax=axes[2], shrink=0.85, extend='both', label=f'levels (blue: {DELTA} better)')
        for ax in axes:
            draw_box(ax, data['box'], offset=scale, linewidth=1.0)
            ax.set_axis_off()
    fig.suptitle(title, fontsize=12)
    return fig


def plot_gain_chart(gains, title):
    """Figure: one bar per image (PSNR gain in dB; green: CFSR-Delta better), mean as a dashed line."""
    names, values = list(gains), np.array([gains[n] for n in gains])
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.45 * len(names) + 2.0)), 4.2), layout='constrained')
    colours = ['#2a9d4b' if v >= 0 else '#d1495b' for v in values]
    ax.bar(range(len(names)), values, color=colours, width=0.75)
    mean = float(values.mean())
    ax.axhline(0, color='black', linewidth=0.8)
    ax.axhline(mean, color='#1f4e99', linestyle='--', linewidth=1.5, label=f'mean {mean:+.3f} dB')
    if len(names) <= 40:
        ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0,
                      ha='right' if len(names) > 6 else 'center', fontsize=9)
    else:
        ax.set_xlabel(f'image (folder order, {len(names)} images)')
    ax.set_ylabel('PSNR gain (dB)')
    ax.set_title(title, fontsize=11)
    ax.legend(loc='best', fontsize=9)
    ax.grid(axis='y', alpha=0.3)
    ax.set_xlim(-0.6, len(names) - 0.4)
    return fig


def save_png(fig, path, dpi, max_kb):
    """Write ``fig`` as a PNG of at most ``max_kb`` KiB (0: no limit) and close it.

    Tries full colour at ``dpi``, then a 256-colour palette, then the palette at 15% lower dpi
    each time (not below 40). Returns (dpi used, palette used).
    """
    while True:
        buffer = io.BytesIO()
        fig.savefig(buffer, format='png', dpi=dpi, facecolor='white')
        image = Image.open(buffer).convert('RGB')
        for palette in (False, True):
            out = image.quantize(256, dither=Image.Dither.NONE) if palette else image
            out.save(path, optimize=True)
            if not max_kb or os.path.getsize(path) <= max_kb * 1024:
                plt.close(fig)
                return dpi, palette
        if dpi <= 40:
            plt.close(fig)
            print(f'warning: {path} is {os.path.getsize(path) // 1024} KiB even at {dpi} dpi', file=sys.stderr)
            return dpi, True
        dpi = max(40, int(dpi * 0.85))


# ------------------------------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--hr', required=True, help='benchmark HR folder, e.g. ../shared/datasets/benchmark/Set14/HR')
    p.add_argument('--scale', type=int, default=4, help='SR scale (default 4)')
    p.add_argument('--refiner', default='BPRefineNet',
                   help='CFSR-Delta refiner; needs <options-dir>/test_CFSRDelta_<refiner>_x<scale>.yml '
                        '(default BPRefineNet)')
    p.add_argument('--out', default=os.path.join(ROOT, 'docs', 'figures'),
                   help='folder for the PNGs, created if missing (default: docs/figures)')
    p.add_argument('--images', nargs='+', metavar='NAME',
                   help='images that get panels and error maps, by name with or without extension '
                        '(default: the --top images with the largest PSNR gain)')
    p.add_argument('--top', type=int, default=2, help='how many images to choose without --images (default 2)')
    p.add_argument('--box', type=parse_box, metavar='X,Y,W,H',
                   help='zoom box in HR pixels, for every chosen image (default: chosen automatically '
                        'where the two methods differ most)')
    p.add_argument('--options-dir', default=os.path.join(ROOT, 'options', 'test'),
                   help='folder of the test option files (default: options/test)')
    p.add_argument('--dpi', type=int, default=100, help='resolution of the PNGs (default 100)')
    p.add_argument('--max-kb', type=int, default=300,
                   help='largest PNG size in KiB; bigger figures get a palette / lower dpi (0: no limit; default 300)')
    args = p.parse_args(argv)
    if args.top < 1:
        p.error('--top must be at least 1')
    return args


def main(argv=None):
    """Evaluate the folder, write the figures, print their paths; returns the list of paths."""
    args = parse_args(argv)
    try:
        images = load_hr_folder(args.hr)
        backbone, deltas = load_networks(args.scale, [args.refiner], args.options_dir)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    backbone, delta = backbone.cpu(), deltas[args.refiner].cpu()
    dataset = dataset_name(args.hr)
    print(f'{dataset} x{args.scale}: {len(images)} images, {BACKBONE} vs {DELTA} ({args.refiner})', file=sys.stderr)
    psnrs = evaluate_folder(images, args.scale, backbone, args.refiner, delta)
    gains = {name: delta - base for name, (base, delta) in psnrs.items()}
    try:
        chosen = select_images(gains, args.images, args.top)
        by_name = dict(images)
        rows = [prepare_figure_data(name, by_name[name], args.scale, backbone, delta, args.box) for name in chosen]
    except ValueError as err:
        sys.exit(f'error: {err}')

    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, f'{dataset}_x{args.scale}_{args.refiner}')
    setting = f'x{args.scale}, PSNR on Y, crop {args.scale}'
    figures = []
    for data in rows:
        x, y, w, h = data['box']
        title = (f'{dataset} {data["name"]} ({setting}); {DELTA} = {BACKBONE} + {args.refiner}; '
                 f'zoom {w}x{h} at ({x}, {y})')
        figures.append((f'{prefix}_{data["name"]}_panels.png', plot_panels(data, title)))
    figures.append((f'{prefix}_error_maps.png', plot_error_maps(
        rows, args.scale, f'{dataset} x{args.scale}: error on the Y channel, {BACKBONE} vs {DELTA} ({args.refiner})')))
    figures.append((f'{prefix}_gain.png', plot_gain_chart(
        gains, f'{dataset}: PSNR gain of {DELTA} ({args.refiner}) over {BACKBONE} ({setting})')))
    paths = []
    for path, fig in figures:
        dpi, palette = save_png(fig, path, args.dpi, args.max_kb)
        note = f' ({dpi} dpi{", 256-colour palette" if palette else ""})'
        print(f'wrote {os.path.getsize(path) // 1024} KiB{note}: {path}', file=sys.stderr)
        print(path, flush=True)
        paths.append(path)
    print(f'mean gain {np.mean(list(gains.values())):+.4f} dB over {len(gains)} images', file=sys.stderr)
    return paths


if __name__ == '__main__':
    main()
