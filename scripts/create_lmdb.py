"""Pack an image folder (HR, LR or cached SR_base) into an LMDB that BasicSR's loaders read.

Writes <out>.lmdb/{data.mdb, lock.mdb, meta_info.txt}. Every image is stored as PNG bytes under the
key <file stem> (with --strip-suffix removed); meta_info.txt has one line per image,
'<key>.png (h,w,c) <compress_level>', the format of BasicSR's paired_paths_from_lmdb, which pairs
LR and GT by key. So build the LR LMDB of EDSR-named files ('0001x4.png') with --strip-suffix x4
to get the HR key '0001', and check it against the HR LMDB with --match.

8-bit images are stored as 8-bit 3-channel PNGs (grayscale replicated, as the protocol reads it);
16-bit PNGs (the SR_base cache of scripts/cache_backbone_outputs.py) stay 16-bit. The LMDB map
size is estimated from the data and grown if it turns out too small. Unreadable images are
reported and left out; the exit status is then non-zero.

Example (the x4 LMDBs of options/train/train_CFSRDelta_LRRefineNet_x4_lmdb.yml):
  python scripts/create_lmdb.py --input datasets/train291/train/HR --out datasets/train291_lmdb/train_HR.lmdb
  python scripts/create_lmdb.py --input datasets/train291/train/LR_bicubic/X4 --strip-suffix x4 \\
      --out datasets/train291_lmdb/train_LR_X4.lmdb --match datasets/train291_lmdb/train_HR.lmdb
  python scripts/create_lmdb.py --input datasets/train291/train/SRbase_CFSR_x4 \\
      --out datasets/train291_lmdb/train_SRbase_CFSR_x4.lmdb --match datasets/train291_lmdb/train_HR.lmdb
"""
import argparse
import multiprocessing
import os
import sys
from functools import partial
from typing import NamedTuple


from cfsrdelta_arch.utils.compat import install_functional_tensor_alias

install_functional_tensor_alias()
import cv2
import lmdb

from cfsrdelta_arch.data.lr_generation import list_images, read_image_color

META_INFO = 'meta_info.txt'
MiB = 1 << 20


class Encoded(NamedTuple):
    """One image ready for the LMDB, or the reason it is not."""
    key: str
    path: str
    data: bytes = b''
    shape: tuple = ()  # (h, w, c)
    error: str = ''


def lmdb_key(path, strip_suffix=''):
    """LMDB key of an image file: its stem without ``strip_suffix`` ('0001x4.png' -> '0001').

    BasicSR takes the key as the part of the meta_info line before the first '.', and encodes keys
    as ASCII, so keys with '.', whitespace or non-ASCII characters are refused (ValueError).
    """
    key = os.path.splitext(os.path.basename(path))[0]
    if strip_suffix:
        if not key.endswith(strip_suffix) or key == strip_suffix:
            raise ValueError(f'{path}: file stem does not end with --strip-suffix {strip_suffix!r}')
        key = key[:-len(strip_suffix)]
    if not key.isascii() or '.' in key or any(c.isspace() for c in key):
        raise ValueError(f'{path}: key {key!r} must be ASCII without "." or whitespace (BasicSR meta_info)')
    return key


def keyed_paths(paths, strip_suffix=''):
    """[(key, path)] for the image paths; ValueError when two files give the same key."""
    seen = {}
    for path in paths:
        key = lmdb_key(path, strip_suffix)
        if key in seen:
            raise ValueError(f'{seen[key]} and {path} both give the key {key!r}')
        seen[key] = path
    return list(seen.items())


def lmdb_keys(lmdb_path):
    """The keys listed in an LMDB's meta_info.txt, read the way BasicSR reads them."""
    meta = os.path.join(lmdb_path, META_INFO)
    if not os.path.isfile(meta):
        raise FileNotFoundError(f'{meta} is missing: not an LMDB made by this script or BasicSR')
    with open(meta) as f:
        return [line.split('.')[0] for line in f if line.strip()]


def check_same_keys(keys, other_lmdb):
    """ValueError unless ``keys`` are exactly the keys of ``other_lmdb`` (e.g. LR against HR)."""
    other = set(lmdb_keys(other_lmdb))
    only_here, only_there = sorted(set(keys) - other), sorted(other - set(keys))
    if only_here or only_there:
        raise ValueError(f'keys differ from {other_lmdb}: {len(only_here)} only here (e.g. {only_here[:3]}), '
                         f'{len(only_there)} only there (e.g. {only_there[:3]}); check --strip-suffix')


def encode_image(compress_level, item):
    """Worker: read ``item = (key, path)`` and PNG-encode it (uint8 or uint16 BGR (h, w, 3)).

    Returns:
        Encoded: never raises for a bad image; the error is in ``Encoded.error``.
    """
    key, path = item
    try:
        img = read_image_color(path, keep_16bit=True)
        ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
        if not ok:
            raise OSError(f'cannot PNG-encode {path}')
        return Encoded(key, path, buf.tobytes(), img.shape)
    except (OSError, cv2.error) as err:
        return Encoded(key, path, error=str(err))


def estimate_map_size(total_file_bytes, sample_file_bytes, sample_encoded_bytes, margin=2.0):
    """LMDB map size in bytes: the input size scaled by one image's encoded/file size ratio.

    The ratio corrects for inputs compressed differently (JPEG, higher PNG levels); ``margin`` and
    64 MiB cover the variation between images and LMDB's page overhead. Rounded up to whole MiB.
    """
    ratio = sample_encoded_bytes / max(sample_file_bytes, 1)
    estimate = int(total_file_bytes * ratio * margin) + 64 * MiB
    return -(-estimate // MiB) * MiB


class LmdbWriter:
    """Buffered writes to a new LMDB, committed in batches; the map grows (x2) when it is full.

    Args:
        path (str): LMDB folder to create.
        map_size (int): initial map size in bytes.
        commit_bytes (int): commit once this much data is pending.
    """

    def __init__(self, path, map_size, commit_bytes=256 * MiB):
        self.env = lmdb.open(path, map_size=map_size)
        self.commit_bytes = commit_bytes
        self.pending, self.pending_bytes, self.resizes = [], 0, 0

    def put(self, key, data):
        self.pending.append((key.encode('ascii'), data))
        self.pending_bytes += len(data)
        if self.pending_bytes >= self.commit_bytes:
            self.commit()

    def commit(self):
        """Write the pending entries in one transaction, growing the map until they fit."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, data in self.pending:
                        txn.put(key, data)
                break
            except lmdb.MapFullError:  # the transaction was aborted; retry with a larger map
                self.env.set_mapsize(self.env.info()['map_size'] * 2)
                self.resizes += 1
        self.pending, self.pending_bytes = [], 0

    def close(self):
        self.commit()
        self.env.close()


def run_tasks(func, tasks, workers):
    """Yield ``func(task)`` for every task in order, using ``workers`` processes (1: in-process)."""
    if workers <= 1:
        yield from map(func, tasks)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(func, tasks, chunksize=4)


def prepare_output(out, overwrite):
    """Check the output path; with ``overwrite`` remove the files of an earlier LMDB there."""
    if not out.endswith('.lmdb'):
        raise ValueError(f'--out must end with .lmdb (BasicSR requires it): {out}')
    if os.path.exists(out):
        if not overwrite:
            raise FileExistsError(f'{out} exists; pass --overwrite to replace it')
        for name in ('data.mdb', 'lock.mdb', META_INFO):
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    os.makedirs(out, exist_ok=True)


def initial_map_size(items, compress_level):
    """(total input bytes, estimated map size) from the file sizes and the first image's encoding."""
    total = sum(os.path.getsize(p) for _, p in items)
    first_size = os.path.getsize(items[0][1])
    sample = encode_image(compress_level, items[0])
    return total, estimate_map_size(total, first_size, len(sample.data) if not sample.error else first_size)


def write_lmdb(items, out, compress_level, workers):
    """Encode and store every (key, path) and write meta_info.txt.

    Returns:
        tuple: (number stored, list of failed Encoded, bytes of PNG data stored).
    """
    total, map_size = initial_map_size(items, compress_level)
    print(f'{len(items)} images, {total / MiB:.1f} MiB of files; initial LMDB map size {map_size / MiB:.0f} MiB')
    writer = LmdbWriter(out, map_size)
    failed, stored, nbytes = [], 0, 0
    every = max(1, len(items) // 200)  # progress lines
    with open(os.path.join(out, META_INFO), 'w') as meta:
        for i, enc in enumerate(run_tasks(partial(encode_image, compress_level), items, workers), 1):
            if enc.error:
                failed.append(enc)
                print(f'\nerror: {enc.error} (left out)', file=sys.stderr, flush=True)
            else:
                writer.put(enc.key, enc.data)
                h, w, c = enc.shape
                meta.write(f'{enc.key}.png ({h},{w},{c}) {compress_level}\n')
                stored += 1
                nbytes += len(enc.data)
            if i == len(items) or i % every == 0:
                print(f'\r[{i}/{len(items)}] {enc.key:<24}', end='', flush=True)
    writer.close()
    print()
    if writer.resizes:
        print(f'the map size was doubled {writer.resizes} time(s)')
    return stored, failed, nbytes


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
        items = keyed_paths(list_images(args.input), args.strip_suffix)
        if args.match:
            check_same_keys([k for k, _ in items], args.match)
        prepare_output(args.out, args.overwrite)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')

    stored, failed, nbytes = write_lmdb(items, args.out, args.compress_level, args.workers)
    print(f'stored {stored} images ({nbytes / MiB:.1f} MiB of PNG) in {args.out}')
    if failed:
        sys.exit(f'error: {len(failed)} of {len(items)} images could not be read and are missing from the LMDB: '
                 + ', '.join(os.path.basename(e.path) for e in failed[:10]) + (' ...' if len(failed) > 10 else ''))


if __name__ == '__main__':
    main()
