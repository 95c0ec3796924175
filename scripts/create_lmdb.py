"""Pack an image folder (HR, LR or cached SR_base) into an LMDB that BasicSR's loaders read.

Writes <out>.lmdb/{data.mdb, lock.mdb, meta_info.txt}. Every image is stored as PNG bytes under the
key <file stem> (with --strip-suffix removed); meta_info.txt has one line per image,
'<key>.png (h,w,c) <compress_level>', the format of BasicSR's paired_paths_from_lmdb, which pairs
LR and GT by key. So build the LR LMDB of EDSR-named files ('0001x4.png') with --strip-suffix x4
to get the HR key '0001', and check it against the HR LMDB with --match.

8-bit images are stored as 8-bit 3-channel PNGs (grayscale replicated, as the protocol reads it);
16-bit PNGs (the SR_base cache of scripts/cache_backbone_outputs.py) stay 16-bit. The LMDB map
size is estimated from the data and grown if it turns out too small. The LMDB is built whole and
put in place at the end: an existing one is refused unless --overwrite is given; an interrupted
run leaves the old LMDB or none. Unreadable images are reported and left out; the exit status is
then non-zero.

Example (the x4 LMDBs of options/train/train_CFSRDelta_LRRefineNet_x4_lmdb.yml):
  python scripts/create_lmdb.py --input datasets/train291/train/HR --out datasets/train291_lmdb/train_HR.lmdb
  python scripts/create_lmdb.py --input datasets/train291/train/LR_bicubic/X4 --strip-suffix x4 \\
      --out datasets/train291_lmdb/train_LR_X4.lmdb --match datasets/train291_lmdb/train_HR.lmdb
  python scripts/create_lmdb.py --input datasets/train291/train/SRbase_CFSR_x4 \\
      --out datasets/train291_lmdb/train_SRbase_CFSR_x4.lmdb --match datasets/train291_lmdb/train_HR.lmdb
"""
import argparse
import sys

from tqdm import tqdm

from cfsrdelta_arch.data.builder import name_list
from cfsrdelta_arch.data.image_lmdb import MiB, create_lmdb


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help='image folder (HR, LR_bicubic/X<s>, or an SR_base cache)')
    p.add_argument('--out', required=True, help='LMDB folder to create; must end with .lmdb')
    p.add_argument('--strip-suffix', default='',
                   help="remove this from the end of every file stem to get the key, e.g. x4 for "
                        "'0001x4.png' -> '0001' (LR folders in EDSR naming)")
    p.add_argument('--match', help='existing LMDB (e.g. the HR one) whose keys must be exactly these keys')
    p.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0..9',
                   help='PNG compression level of the stored images (default 1: fast to decode)')
    p.add_argument('--workers', type=int, default=1, help='parallel processes for reading/encoding (default 1)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing LMDB at --out')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        summary = create_lmdb(args.input, args.out, args.strip_suffix, args.match, args.compress_level,
                              args.workers, args.overwrite, tqdm,
                              lambda enc: tqdm.write(f'error: {enc.error} (left out)', file=sys.stderr))
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(f'stored {summary.stored} images ({summary.nbytes / MiB:.1f} MiB of PNG) in {args.out}; LMDB map size '
          f'{summary.map_size / MiB:.0f} MiB' + (f', doubled {summary.resizes} time(s)' if summary.resizes else ''))
    if summary.failed:
        n = summary.stored + len(summary.failed)
        sys.exit(f'error: {len(summary.failed)} of {n} images could not be read and are missing from the LMDB: '
                 + name_list([e.path for e in summary.failed]))


if __name__ == '__main__':
    main()
