"""Figures of the robustness table (docs/figures): PSNR against blur width and noise level from its CSV
files, and image panels of one degraded LR folder. matplotlib is imported on use (extra 'figures')."""
import os

import numpy as np
import torch
from basicsr.metrics import calculate_psnr

from cfsrdelta_arch.data.lr_generation import mod_crop, read_image_color
from cfsrdelta_arch.utils.fileio import atomic_path
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from .robustness import METHODS, method_outputs


def pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save(fig, path, dpi=110):
    """Write a figure atomically as PNG and close it."""
    with atomic_path(path, suffix='.part.png') as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches='tight')
    pyplot().close(fig)


def present(rows, sets):
    """The sets of ``sets`` that have rows (the titles name only those)."""
    return [s for s in sets if any(r['set'] == s for r in rows)]


def mean_psnr(rows, method, sets, setting, kernel=None, noise=None):
    """Mean PSNR over ``sets`` (each set's value weighted equally) of the rows matching the filters, or None."""
    values = [float(r['psnr']) for r in rows if r['method'] == method and r['set'] in sets and r['setting'] == setting
              and (kernel is None or r['kernel'] == kernel) and (noise is None or float(r['noise']) == noise)]
    return float(np.mean(values)) if values else None


def plot_psnr_vs_blur(rows, sets, path, noises=(0.0, 7.65)):
    """gaussian8: PSNR-Y against σ_k, one panel per noise level, one line per method (mean over ``sets``)."""
    plt = pyplot()
    sets = present(rows, sets)
    widths = sorted({r['kernel'] for r in rows if r['setting'] == 'gaussian8'}, key=lambda k: float(k[1:]))
    fig, axes = plt.subplots(1, len(noises), figsize=(5.2 * len(noises), 3.8), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        for method, (label, _) in METHODS.items():
            ys = [mean_psnr(rows, method, sets, 'gaussian8', k, noise) for k in widths]
            if any(y is not None for y in ys):
                ax.plot([float(k[1:]) for k in widths], [np.nan if y is None else y for y in ys], marker='o', label=label)
        ax.set(title=f"gaussian8 x4, σ_n = {noise:g} ({' + '.join(sets)})", xlabel='blur width σ_k (HR pixels)',
               ylabel='PSNR-Y (dB)')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save(fig, path)


def plot_psnr_vs_noise(rows, sets, kernel, path):
    """PSNR-Y against σ_n for one gaussian8 kernel, one line per method (mean over ``sets``)."""
    plt = pyplot()
    sets = present(rows, sets)
    noises = sorted({float(r['noise']) for r in rows if r['kernel'] == kernel})
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for method, (label, _) in METHODS.items():
        ys = [mean_psnr(rows, method, sets, 'gaussian8', kernel, n) for n in noises]
        if any(y is not None for y in ys):
            ax.plot(noises, [np.nan if y is None else y for y in ys], marker='o', label=label)
    ax.set(title=f"gaussian8 x4 {kernel} ({' + '.join(sets)})", xlabel='noise σ_n (0-255)', ylabel='PSNR-Y (dB)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)


@torch.inference_mode()
def plot_panels(case, image, box, methods, nets, scale, path):
    """HR | LR (nearest) | each method on one image of a case: the whole image with the box, and the box zoomed.

    Args:
        case (robustness.Case): the LR folder. image (str): the image stem. box (x, y, w, h): HR pixels.
    """
    plt = pyplot()
    hr = mod_crop(read_image_color(os.path.join(case.hr_folder, image + '.png')), scale)
    lr_img = read_image_color(os.path.join(case.lr_folder, case.tmpl.format(image) + '.png'))
    outputs = method_outputs(methods, nets, scale, case, image_to_tensor(lr_img, bgr=True))
    shown = [('HR', hr), ('LR (nearest)', np.repeat(np.repeat(lr_img, scale, 0), scale, 1))]
    for m in methods:
        sr = tensor_to_image(outputs[m], bgr=True)
        shown.append((f'{METHODS[m][0]}\n{calculate_psnr(sr, hr, scale, test_y_channel=True):.2f} dB', sr))
    x, y, w, h = box
    fig, axes = plt.subplots(2, len(shown), figsize=(2.6 * len(shown), 5.4))
    for col, (title, img) in enumerate(shown):
        rgb = img[..., ::-1]
        axes[0, col].imshow(rgb)
        axes[0, col].add_patch(plt.Rectangle((x, y), w, h, fill=False, color='#ffd400', linewidth=1.2))
        axes[0, col].set_title(title, fontsize=7)
        axes[1, col].imshow(rgb[y:y + h, x:x + w], interpolation='nearest')
        for ax in axes[:, col]:
            ax.axis('off')
    fig.suptitle(f'{case.set} {image}, {case.setting} {case.kernel}, σ_n {case.noise:g} (x{scale})', fontsize=9)
    save(fig, path)
