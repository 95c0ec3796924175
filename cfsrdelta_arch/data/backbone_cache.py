"""The frozen backbone's output (SR_base) of every LR image of a delta training run, computed once
(scripts/cache_backbone_outputs.py) and read by PairedCachedBaseDataset.

For every dataset of type PairedCachedBaseDataset in a train option dict, ``<dataroot_base>/<GT
file name>`` holds SR_base of the whole LR image as a 16-bit PNG, computed as at test time: the
``BackboneDelta`` of ``network_g`` (its ``backbone_weights``, ``backbone_pad_multiple`` and clamp,
:meth:`BackboneDelta.forward_backbone`) run through :func:`cfsrdelta_arch.utils.inference.super_resolve`
(tiled with the default overlap for large images).

``<dataroot_base>/cache_info.json`` records what the files depend on: the backbone (options,
weights sha256, scale, padding) and, per file, the sha256 of the LR image it was computed from.
A re-run completes the cache: files whose LR is unchanged are kept, the others are (re)computed,
and files of images that left the dataset are removed. Every file is written atomically, so an
interrupted run leaves complete files only; the info is saved every ``INFO_EVERY_S`` seconds, so
a killed run redoes at most that much work. A folder holding another backbone's cache (or
anything but a cache) is refused; ``overwrite`` rebuilds it from scratch apart from it and puts
it in place at the end. ``dataroot_base`` may not be, lie inside or contain an input folder.
"""
import contextlib
import json
import os
import time
from typing import NamedTuple

import cv2
import numpy as np
from basicsr.data.data_util import paired_paths_from_folder

from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
from cfsrdelta_arch.data.builder import check_apart, no_progress, staged_folder
from cfsrdelta_arch.data.lr_generation import list_images, read_image_color
from cfsrdelta_arch.utils.fileio import write_bytes_atomic, write_text_atomic
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.utils.inference import super_resolve
from cfsrdelta_arch.utils.weights import sha256_of

CACHE_INFO = 'cache_info.json'
INFO_EVERY_S = 10.0


class CacheJob(NamedTuple):
    """One cache folder and the LR/GT pairs whose SR_base it holds."""
    key: str  # the dataset's key under ``datasets`` (e.g. 'train')
    folder: str  # dataroot_base
    pairs: list  # [{'lq_path': ..., 'gt_path': ...}], BasicSR's pairing


class CacheReport(NamedTuple):
    """What one run did to one cache folder."""
    key: str
    folder: str
    computed: int
    kept: int
    removed: int  # files of images no longer in the dataset (or left by a killed write)


def cached_datasets(opt):
    """{key: dataset option} of the PairedCachedBaseDataset datasets of a train option dict."""
    if not isinstance(opt, dict):
        raise ValueError('the option file holds no options')
    datasets = {k: d for k, d in (opt.get('datasets') or {}).items()
                if isinstance(d, dict) and d.get('type') == 'PairedCachedBaseDataset'}
    if not datasets:
        raise ValueError('no dataset of type PairedCachedBaseDataset under datasets: nothing to cache')
    for key, d in datasets.items():
        missing = [k for k in ('dataroot_gt', 'dataroot_lq', 'dataroot_base') if not d.get(k)]
        if missing:
            raise ValueError(f'datasets.{key} has no {", ".join(missing)}')
        if (d.get('io_backend') or {}).get('type') == 'lmdb':
            raise ValueError(f'datasets.{key} reads LMDBs; cache with the option file that reads the image '
                             'folders, then pack the cache with scripts/create_lmdb.py')
    return datasets


def cache_jobs(opt):
    """The :class:`CacheJob` of every cache folder, after checking that no folder is an input's.

    Two datasets may share a ``dataroot_base`` only when they are the same images (same GT and LR
    folders and template); the folder is then cached once.
    """
    datasets = cached_datasets(opt)
    inputs = [(f'datasets.{k}.{root}', d[root]) for k, d in datasets.items() for root in ('dataroot_gt', 'dataroot_lq')]
    jobs, sources = {}, {}
    for key, d in datasets.items():
        check_apart(d['dataroot_base'], f'datasets.{key}.dataroot_base', inputs)
        source = tuple(os.path.realpath(d[root]) for root in ('dataroot_gt', 'dataroot_lq')) + \
            (d.get('filename_tmpl', '{}'),)
        folder = os.path.realpath(d['dataroot_base'])
        if folder in jobs:
            if sources[folder] != source:
                raise ValueError(f'datasets.{jobs[folder].key} and datasets.{key} share dataroot_base '
                                 f"{d['dataroot_base']} but not their images; give each its own dataroot_base")
            continue
        for root in ('dataroot_gt', 'dataroot_lq'):
            list_images(d[root])  # one-line error for a missing or empty folder
        try:
            pairs = paired_paths_from_folder([d['dataroot_lq'], d['dataroot_gt']], ['lq', 'gt'], source[2])
        except AssertionError as err:  # BasicSR's pairing reports with assert
            raise ValueError(f"datasets.{key}: {err} ({d['dataroot_lq']} against {d['dataroot_gt']})") from None
        jobs[folder], sources[folder] = CacheJob(key, d['dataroot_base'], pairs), source
    return list(jobs.values())


def cache_signature(opt):
    """What every cached file depends on: backbone options, the sha256 of its weights, the scale and
    (when used) the input padding. Plain JSON types, so it compares equal to a loaded cache_info."""
    net_opt = opt.get('network_g') or {}
    weights = net_opt.get('backbone_weights')
    if not weights:
        raise ValueError('network_g.backbone_weights is not set: nothing to cache')
    if not opt.get('scale'):
        raise ValueError('the options set no scale')
    signature = {'backbone': net_opt['backbone'], 'weights_sha256': sha256_of(weights), 'scale': opt['scale']}
    pad_multiple = net_opt.get('backbone_pad_multiple', 1)
    if pad_multiple != 1:  # recorded only when used, so caches made before the option stay valid
        signature['backbone_pad_multiple'] = pad_multiple
    return json.loads(json.dumps(signature))


def build_network(opt):
    """The ``BackboneDelta`` of ``network_g``, weights loaded (checked), in eval mode."""
    net_opt = opt.get('network_g') or {}
    if net_opt.get('type') != 'BackboneDelta':
        raise ValueError(f"network_g.type is {net_opt.get('type')!r}; the SR_base cache is for a BackboneDelta "
                         'network_g (frozen backbone + refiner)')
    try:
        return build_from_options(net_opt).eval()
    except TypeError as err:  # a missing or unknown argument of BackboneDelta or its parts
        raise ValueError(f'network_g: {err}') from None


def base_png(net, lr_path, scale, tile_size):
    """SR_base of one LR file as 16-bit PNG bytes (BGR, as PairedCachedBaseDataset decodes it).

    Args:
        net (BackboneDelta): supplies :meth:`BackboneDelta.forward_backbone` (padding, clamp to [0, 1]).
        tile_size (int | None): LR tile size for large images; None runs the whole image.
    """
    lr = image_to_tensor(read_image_color(lr_path), bgr=True)
    sr = super_resolve(net.forward_backbone, lr, scale, tile_size=tile_size)
    ok, buf = cv2.imencode('.png', tensor_to_image(sr, np.uint16, bgr=True))
    if not ok:
        raise OSError(f'cannot PNG-encode the SR_base of {lr_path}')
    return buf.tobytes()


def read_cache_info(folder, signature):
    """{file name: LR sha256} of the valid entries of an existing cache folder ({} for a new or empty one).

    Raises:
        ValueError: the folder holds another backbone's cache, or files but no cache_info.json.
    """
    info_path = os.path.join(folder, CACHE_INFO)
    if not os.path.isfile(info_path):
        if os.path.isdir(folder) and os.listdir(folder):
            raise ValueError(f'{folder} holds files but no {CACHE_INFO}, so it is no SR_base cache; set '
                             'dataroot_base to a new or empty folder (--overwrite would replace everything in it)')
        return {}
    try:
        with open(info_path, encoding='utf-8') as f:
            info = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f'{info_path} is unreadable ({err}); pass --overwrite to rebuild the cache') from None
    if info.get('signature', info) != signature:  # caches made before per-file entries hold the signature only
        raise ValueError(f'{folder} holds SR_base of another backbone ({info_path}); pass --overwrite to rebuild '
                         'it or set another dataroot_base')
    return info.get('inputs', {})


def save_cache_info(folder, signature, inputs):
    write_text_atomic(os.path.join(folder, CACHE_INFO),
                      json.dumps({'signature': signature, 'inputs': inputs}, indent=1, sort_keys=True))


def remove_stale(folder, names):
    """Remove the files of ``folder`` other than ``names`` and cache_info.json; returns how many."""
    stale = [f for f in os.listdir(folder) if f not in names and f != CACHE_INFO
             and os.path.isfile(os.path.join(folder, f))]
    for f in stale:
        os.remove(os.path.join(folder, f))
    return len(stale)


def fill_cache(net, job, folder, signature, known, scale, tile_size, progress=no_progress):
    """Bring ``folder`` up to date for ``job``; ``known``: {name: LR sha256} of the files already valid.

    Returns:
        CacheReport
    """
    names = [os.path.basename(p['gt_path']) for p in job.pairs]
    wanted = set(names)
    os.makedirs(folder, exist_ok=True)
    known = {n: sha for n, sha in known.items() if n in wanted}
    save_cache_info(folder, signature, known)  # before any file: the folder is this backbone's cache
    removed = remove_stale(folder, wanted)
    inputs, computed, last_save = dict(known), 0, time.monotonic()
    for pair, name in progress(list(zip(job.pairs, names)), total=len(names), desc=job.key):
        out = os.path.join(folder, name)
        lr_sha = sha256_of(pair['lq_path'])
        if known.get(name) != lr_sha or not os.path.isfile(out):
            write_bytes_atomic(out, base_png(net, pair['lq_path'], scale, tile_size))
            computed += 1
        inputs[name] = lr_sha
        if time.monotonic() - last_save >= INFO_EVERY_S:
            save_cache_info(folder, signature, inputs)
            last_save = time.monotonic()
    save_cache_info(folder, signature, inputs)
    return CacheReport(job.key, job.folder, computed, len(names) - computed, removed)


def cache_backbone_outputs(opt, tile_size=256, overwrite=False, progress=no_progress):
    """Compute or complete the SR_base cache of every PairedCachedBaseDataset of a train option dict.

    Args:
        opt (dict): train options (``datasets``, ``network_g`` of type BackboneDelta, ``scale``).
        tile_size (int | None): LR tile size for large images; None runs whole images.
        overwrite (bool): rebuild existing cache folders from scratch (another backbone's included).
        progress: see :mod:`cfsrdelta_arch.data.builder`.

    Returns:
        list[CacheReport]: one per cache folder.

    Raises:
        ValueError/OSError: one line, before any file is written for option, folder and weight
        problems; later for an unreadable LR image (files computed so far are kept).
    """
    jobs = cache_jobs(opt)
    net = build_network(opt)
    signature = cache_signature(opt)
    # Every folder is checked before the first file is computed.
    rebuild = [overwrite and os.path.isdir(job.folder) and bool(os.listdir(job.folder)) for job in jobs]
    known = [{} if r else read_cache_info(job.folder, signature) for job, r in zip(jobs, rebuild)]
    reports = []
    for job, rebuild_job, known_job in zip(jobs, rebuild, known):
        staging = staged_folder(job.folder, True) if rebuild_job else contextlib.nullcontext(job.folder)
        with staging as folder:
            reports.append(fill_cache(net, job, folder, signature, known_job, opt['scale'], tile_size, progress))
    return reports
