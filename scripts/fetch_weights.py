"""Put the upstream CFSR / LESRCNN weights in weights/official/, verified by sha256.

Three ways:
  (default)    download each file from its commit-pinned upstream URL (README, "Weights"), or from
               <base>/<file name> when CFSRDELTA_WEIGHTS_URL=<base> is set:
               python scripts/fetch_weights.py --only CFSR
  --from DIR   link (or --copy) files from a local folder, e.g. on an offline machine:
               python scripts/fetch_weights.py --from /data/weights/official
  --url-base U download <U>/<file name> for each file (a mirror of the upstream files):
               python scripts/fetch_weights.py --url-base https://example.org/cfsr-mirror --only CFSR_x4

Every file is checked against the sha256 of the upstream release before it is kept; a file that
does not match is reported and not installed. A missing official file is also downloaded on first
use by the main job, cfsrdelta-infer and the train/test runners; this script fetches them ahead.
"""
import argparse
import os
import sys

from cfsrdelta_arch.utils.weights import OFFICIAL_WEIGHTS, install_official

DEFAULT_DEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'weights', 'official')


def wanted_files(only):
    """Official file names, optionally restricted to names starting with one of ``only``."""
    return [n for n in OFFICIAL_WEIGHTS if not only or any(n.startswith(o) for o in only)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument('--from', dest='src_dir', help='local folder holding CFSR_x*.pth / LESRCNN_x*.pth')
    src.add_argument('--url-base', help='download <url-base>/<file name> instead of the upstream URLs')
    p.add_argument('--dest', default=DEFAULT_DEST, help='where to put them (default: weights/official)')
    p.add_argument('--only', nargs='+', help='file name prefixes to fetch, e.g. CFSR or CFSR_x4')
    p.add_argument('--copy', action='store_true', help='copy instead of symlinking local files')
    p.add_argument('--quiet', action='store_true', help='print only problems (no progress bars)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.src_dir and not os.path.isdir(args.src_dir):
        sys.exit(f'error: not a folder: {args.src_dir}')
    failed = 0
    for name in wanted_files(args.only):
        status = install_official(name, args.dest, args.src_dir, args.copy, args.url_base, not args.quiet)
        ok = status in ('ok', 'already there')
        failed += not ok
        if not ok or not args.quiet:
            print(f'{name:16s} {status}')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
