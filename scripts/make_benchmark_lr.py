"""Make benchmark LR images from HR folders exactly per the evaluation protocol (EDSR layout).

For each HR image: mod-crop to a multiple of the scale, MATLAB-compatible bicubic downsampling
with antialiasing, MATLAB rounding, saved as <out>/LR_bicubic/X<s>/<name>x<s>.png. Grayscale HR is
read as 3 channels. <out>/HR is linked to the HR folder when it is elsewhere, so <out> is a
complete benchmark folder for options/test/*.yml.

Example:
  python scripts/make_benchmark_lr.py --hr ../shared/datasets/benchmark/B100/HR --out datasets/benchmark/B100
"""
import argparse
import os
import sys


from cfsrdelta_arch.utils.compat import install_functional_tensor_alias

install_functional_tensor_alias()
from cfsrdelta_arch.data.lr_generation import check_sizes, list_images, write_lr_images


def link_hr(hr_folder, out_root):
    """Make ``out_root/HR`` point at ``hr_folder`` unless it already is that folder."""
    target = os.path.join(out_root, 'HR')
    if os.path.abspath(hr_folder) == os.path.abspath(target):
        return
    if os.path.islink(target):
        os.remove(target)
    elif os.path.exists(target):
        raise FileExistsError(f'{target} exists and is not a link; pass --out elsewhere')
    os.symlink(os.path.abspath(hr_folder), target)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--hr', required=True, help='folder of HR images (png/jpg/bmp/tif)')
    p.add_argument('--out', required=True, help='benchmark folder to write LR_bicubic/ into (HR/ is linked)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4], help='scales to make (default: 2 3 4)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        paths = list_images(args.hr)
        check_sizes(paths, max(args.scales))
    except (ValueError, OSError) as err:  # ImageReadError is an OSError
        sys.exit(f'error: {err}')
    os.makedirs(args.out, exist_ok=True)
    link_hr(args.hr, args.out)

    def progress(i, n, path):
        print(f'\r[{i}/{n}] {os.path.basename(path)}', end='\n' if i == n else '', flush=True)

    try:
        n = write_lr_images(paths, args.out, args.scales, progress)
    except OSError as err:
        sys.exit(f'\nerror: {err}')
    print(f'wrote {n} LR images for scales {args.scales} under {os.path.join(args.out, "LR_bicubic")}')


if __name__ == '__main__':
    main()
