"""Put the upstream CFSR / LESRCNN weights in weights/official/, verified by sha256.

Two ways:
  --from DIR   link (or --copy) files from a local folder, e.g. an offline machine's copy:
               python scripts/fetch_weights.py --from /data/weights/official
  --url-base U download <U>/<file name> for each file (e.g. a mirror of the upstream releases):
               python scripts/fetch_weights.py --url-base https://huggingface.co/GWu/CFSR/resolve/main --only CFSR

Every file is checked against the sha256 of the upstream release before it is kept; a file that
does not match is reported and not installed. Sources of the originals: see README, "Weights".
"""
import argparse
import os
import shutil
import sys
import tempfile
import urllib.request


from cfsrdelta_arch.utils.weights import OFFICIAL_SOURCES, OFFICIAL_WEIGHTS, sha256_of

DEFAULT_DEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'weights', 'official')


def wanted_files(only):
    """Official file names, optionally restricted to names starting with one of ``only``."""
    return [n for n in OFFICIAL_WEIGHTS if not only or any(n.startswith(o) for o in only)]


def install_local(src_dir, name, dest_dir, copy):
    """Verify ``src_dir/name`` and link (or copy) it into ``dest_dir``; returns a status string."""
    src = os.path.abspath(os.path.join(src_dir, name))
    if not os.path.isfile(src):
        return 'missing in source'
    if sha256_of(src) != OFFICIAL_WEIGHTS[name]:
        return 'SHA256 MISMATCH, not installed'
    dest = os.path.join(dest_dir, name)
    if os.path.lexists(dest):
        os.remove(dest)
    if copy:
        shutil.copyfile(src, dest)
    else:
        os.symlink(src, dest)
    return 'ok'


def install_download(url_base, name, dest_dir):
    """Download ``url_base/name`` to a temp file, verify, then move into ``dest_dir``."""
    url = f"{url_base.rstrip('/')}/{name}"
    fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix='.part')
    os.close(fd)
    try:
        urllib.request.urlretrieve(url, tmp)
        if sha256_of(tmp) != OFFICIAL_WEIGHTS[name]:
            return f'SHA256 MISMATCH from {url}, not installed'
        os.replace(tmp, os.path.join(dest_dir, name))
        return 'ok'
    except OSError as err:
        return f'download failed ({err})'
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--from', dest='src_dir', help='local folder holding CFSR_x*.pth / LESRCNN_x*.pth')
    src.add_argument('--url-base', help='download <url-base>/<file name>')
    p.add_argument('--dest', default=DEFAULT_DEST, help='where to put them (default: weights/official)')
    p.add_argument('--only', nargs='+', help='file name prefixes to fetch, e.g. CFSR or CFSR_x4')
    p.add_argument('--copy', action='store_true', help='copy instead of symlinking local files')
    p.add_argument('--quiet', action='store_true', help='print only problems')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.src_dir and not os.path.isdir(args.src_dir):
        sys.exit(f'error: not a folder: {args.src_dir}')
    os.makedirs(args.dest, exist_ok=True)
    failed = 0
    for name in wanted_files(args.only):
        status = (install_local(args.src_dir, name, args.dest, args.copy) if args.src_dir
                  else install_download(args.url_base, name, args.dest))
        failed += status != 'ok'
        if status != 'ok' or not args.quiet:
            print(f'{name:16s} {status}')
    if failed:
        print('Upstream sources: ' + '; '.join(f'{k}: {v}' for k, v in OFFICIAL_SOURCES.items()))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
