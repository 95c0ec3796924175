"""An image folder (HR, LR or cached SR_base) packed into an LMDB that BasicSR's loaders read: the
work of scripts/create_lmdb.py, whose help describes keys, meta_info.txt and bit depths.

The LMDB is built whole and put in place at the end (:func:`cfsrdelta_arch.data.builder.staged_folder`).
"""
import os
from functools import partial
from typing import NamedTuple

import cv2
import lmdb

from cfsrdelta_arch.data.builder import check_apart, no_progress, run_tasks, staged_folder
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


class Summary(NamedTuple):
    """What :func:`create_lmdb` stored."""
    stored: int  # images
    nbytes: int  # bytes of PNG data
    failed: list  # Encoded of the images left out (unreadable)
    map_size: int  # initial LMDB map size in bytes
    resizes: int  # times the map size was doubled


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


def initial_map_size(items, compress_level):
    """Estimated map size from the file sizes and the first image's encoding."""
    total = sum(os.path.getsize(p) for _, p in items)
    first_size = os.path.getsize(items[0][1])
    sample = encode_image(compress_level, items[0])
    return estimate_map_size(total, first_size, len(sample.data) if not sample.error else first_size)


def write_lmdb(items, out, compress_level, workers, progress=no_progress, on_error=None, label=''):
    """Encode and store every (key, path) in a new LMDB at ``out`` and write its meta_info.txt.

    Unreadable images are left out (``on_error(Encoded)`` is called for each) and listed in the
    returned :class:`Summary`. ``label`` names the progress bar.
    """
    map_size = initial_map_size(items, compress_level)
    writer = LmdbWriter(out, map_size)
    failed, stored, nbytes = [], 0, 0
    with open(os.path.join(out, META_INFO), 'w') as meta:
        encoded = run_tasks(partial(encode_image, compress_level), items, workers, chunksize=4)
        for enc in progress(encoded, total=len(items), desc=label):
            if enc.error:
                failed.append(enc)
                if on_error:
                    on_error(enc)
                continue
            writer.put(enc.key, enc.data)
            h, w, c = enc.shape
            meta.write(f'{enc.key}.png ({h},{w},{c}) {compress_level}\n')
            stored += 1
            nbytes += len(enc.data)
    writer.close()
    return Summary(stored, nbytes, failed, map_size, writer.resizes)


def create_lmdb(input_folder, out, strip_suffix='', match=None, compress_level=1, workers=1, overwrite=False,
                progress=no_progress, on_error=None):
    """Pack the images of ``input_folder`` into the LMDB ``out`` (a folder whose name ends in .lmdb).

    Everything that can be checked before the work is (images and keys, ``match``: an existing
    LMDB whose keys must be exactly these, ``out`` apart from the inputs, an existing ``out``
    without ``overwrite``) and raises OSError/ValueError with one line. See :func:`write_lmdb`.

    Returns:
        Summary
    """
    if not out.rstrip(os.sep).endswith('.lmdb'):
        raise ValueError(f'--out must end with .lmdb (BasicSR requires it): {out}')
    items = keyed_paths(list_images(input_folder), strip_suffix)
    if match:
        check_same_keys([k for k, _ in items], match)
    check_apart(out, '--out', [('--input', input_folder)] + ([('--match', match)] if match else []))
    with staged_folder(out, overwrite) as staging:
        return write_lmdb(items, staging, compress_level, workers, progress, on_error, os.path.basename(out))
