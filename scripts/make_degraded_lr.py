"""Make degraded LR test sets (blur, decimation, noise) from an HR folder per
docs/degradation_protocol.md (README, "Degraded inputs").

Writes <out>/<setting>/x<s>/<kernel>_n<σ_n>/ with <name>.png (same stem as the HR file), kernel.npy and
degradation.json, for every kernel of the setting (gaussian8: g1.80 ... g3.20 at x4; classical: k1 ... k12)
and every noise level. Each folder is built whole beside its target and renamed into place.

Example:
  python scripts/make_degraded_lr.py --setting classical --scales 4 --noise 0 7.65 \\
      --hr ../shared/datasets/benchmark/Set5/HR --out datasets/degraded/Set5
"""
import argparse
import sys

from tqdm import tqdm

from cfsrdelta_arch.utils.compat import install_functional_tensor_alias

install_functional_tensor_alias()
from cfsrdelta_arch.data.degradations import SETTINGS, write_degraded_sets  # noqa: E402
from cfsrdelta_arch.data.lr_generation import list_images  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--setting', required=True, help=f"degradation setting: {' or '.join(SETTINGS)}")
    p.add_argument('--hr', required=True, help='folder of HR images (png/jpg/bmp/tif)')
    p.add_argument('--out', required=True, help='root of the degraded sets (<out>/<setting>/x<s>/... is written)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4], help='scales (default: 2 3 4)')
    p.add_argument('--noise', type=float, nargs='+', default=[0.0],
                   help='noise levels σ_n on the 0-255 scale (default: 0), e.g. 0 2.55 7.65')
    p.add_argument('--overwrite', action='store_true', help='rebuild existing folders from scratch')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if any(s < 1 for s in args.scales) or any(n < 0 for n in args.noise):
        sys.exit('error: --scales must be positive integers and --noise levels >= 0')

    def progress(iterable, total=None, desc=None):
        return tqdm(iterable, total=total, desc=desc, unit='img', leave=False)

    try:
        folders = write_degraded_sets(list_images(args.hr), args.hr, args.out, args.setting, args.scales,
                                      args.noise, args.overwrite, progress)
    except (ValueError, OSError) as err:  # FileNotFoundError/FileExistsError/ImageReadError are OSErrors
        sys.exit(f'error: {err}')
    print(f'wrote {len(folders)} folders under {args.out}/{args.setting}')


if __name__ == '__main__':
    main()
