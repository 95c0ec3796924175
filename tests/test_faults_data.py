"""Failure cases of the data scripts, run as a user runs them: ``python scripts/<x>.py ...`` in a
process of its own (tests/forked_python.py) on small generated images, the outcome asserted by listing and comparing files.

- a re-run into an existing output is refused (output byte-identical) or, with --overwrite,
  rebuilds it completely: no file of the earlier run survives, no image is in both splits;
- nothing is written into an input folder (the cache into HR/ is refused, HR/ byte-identical);
- a build killed mid-run (SIGKILL; the child's image writes are slowed down so that the kill lands
  mid-build) leaves the old output or none, never a mixture; a killed cache run leaves complete
  files only and the next run completes it.
Setup (first builds, expected values) runs in this process through the data-layer modules.
"""
import glob
import os
import signal
import time

import forked_python
import numpy as np
import yaml
from conftest import (ROOT, assert_cache_matches, cache_options, checkout_env, read_tree, run_script, smooth_image,
                      write_png, write_tiny_dataset, write_tiny_model)

from cfsrdelta_arch.data import backbone_cache, builder, image_lmdb, subimages, training_split
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, mod_crop, read_image_color

# Runs scripts/<x>.py with every OpenCV image write/encode slowed down by ``delay`` seconds.
SLOW_WRITES = '''
import runpy, sys, time
import cv2
def slow(write):
    def slowed(*args, **kwargs):
        time.sleep({delay})
        return write(*args, **kwargs)
    return slowed
cv2.imwrite, cv2.imencode = slow(cv2.imwrite), slow(cv2.imencode)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def exists_message(out):
    return f'error: {out} exists; pass --overwrite to rebuild it from scratch (everything in it is replaced) or ' \
           'choose another --out\n'


def write_sources(root, counts, size=(26, 30)):
    """HR source folders of distinct smooth images: {'A': 3} -> root/A/A0.png, A1.png, A2.png."""
    folders = []
    for seed, (src, n) in enumerate(counts.items()):
        for i in range(n):
            write_png(os.path.join(root, src, f'{src}{i}.png'), smooth_image(*size, seed=100 * seed + i))
        folders.append(os.path.join(root, src))
    return folders


def kill_when(proc, ready, timeout=300):
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fails if it ended or timed out before."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f'the run ended (status {proc.poll()}) before it could be interrupted'
        assert time.monotonic() < deadline, 'the run never got going'
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def start_slowed(name, *args, delay=0.05):
    """Start ``python scripts/<name>.py <args>`` with its image writes slowed down (SLOW_WRITES)."""
    return forked_python.ForkedCommand(['-c', SLOW_WRITES.format(delay=delay),
                                        os.path.join(ROOT, 'scripts', f'{name}.py'), *args],
                                       os.getcwd(), checkout_env())


def staging_files(out):
    """Files inside the staging folders of ``out``."""
    staging = glob.escape(os.path.join(os.path.dirname(out), f'.{os.path.basename(out)}{builder.STAGING_MARK}'))
    return glob.glob(os.path.join(staging + '*', '**', '*'), recursive=True)


# ----------------------------------------------------------------------------- re-runs

def test_prepare_rerun_with_other_settings_is_refused_then_rebuilt_completely(tmp_path):
    sources = write_sources(str(tmp_path / 'src'), {'A': 5, 'B': 4})
    out = str(tmp_path / 'train291')
    training_split.prepare_training_data(sources, out, [2, 4], val_every=3)
    first = read_tree(out)
    assert any(k.startswith(os.path.join('train', 'LR_bicubic', 'X4')) for k in first)
    new_settings = ['--sources', *sources, '--out', out, '--scales', '3', '--val-every', '2', '--min-size', '0']

    refused = run_script('prepare_training_data', *new_settings)
    assert (refused.returncode, refused.stderr) == (1, exists_message(out))
    assert read_tree(out) == first

    rebuilt = run_script('prepare_training_data', *new_settings, '--overwrite')
    assert rebuilt.returncode == 0, rebuilt.stderr
    split = {'train': ['A0', 'A2', 'A4', 'B0', 'B2'], 'val': ['A1', 'A3', 'B1', 'B3']}  # every 2nd held out
    kinds = (('HR', ''), (os.path.join('LR_bicubic', 'X3'), 'x3'))
    assert sorted(read_tree(out)) == sorted(os.path.join(s, kind, f'{stem}{suffix}.png') for s, stems in split.items()
                                            for stem in stems for kind, suffix in kinds)
    for s, stems in split.items():
        for stem in stems:
            hr = mod_crop(read_image_color(os.path.join(tmp_path, 'src', stem[0], f'{stem}.png')), 3)
            assert np.array_equal(read_image_color(os.path.join(out, s, 'HR', f'{stem}.png')), hr)
            lr = read_image_color(os.path.join(out, s, 'LR_bicubic', 'X3', f'{stem}x3.png'))
            assert np.array_equal(lr, bicubic_downsample(hr, 3))


def test_extract_overwrite_leaves_exactly_the_new_crops(tmp_path):
    hr_dir, lr_dir = tmp_path / 'HR', tmp_path / 'X2'
    images = {name: smooth_image(64, 80, seed=i) for i, name in enumerate(('a', 'b'))}
    for name, hr in images.items():
        write_png(str(hr_dir / f'{name}.png'), hr)
        write_png(str(lr_dir / f'{name}x2.png'), bicubic_downsample(hr, 2))
    out = str(tmp_path / 'sub')
    old = subimages.extract_subimages(str(hr_dir), [str(lr_dir)], [2], out, crop_size=32, step=16)
    assert [r.crops for r in old] == [12, 12]

    run = run_script('extract_subimages', '--hr', hr_dir, '--lr', lr_dir, '--scales', '2', '--out', out,
                     '--crop-size', '48', '--step', '48', '--overwrite')
    assert run.returncode == 0, run.stderr
    corners = [(0, 0), (0, 32), (16, 0), (16, 32)]  # 48 px every 48 px on 64x80, plus border-flush crops
    tree = read_tree(out)
    assert sorted(tree) == sorted(os.path.join(folder, subimages.subimage_name(name, i, scale))
                                  for name in images for i in range(1, 5)
                                  for folder, scale in (('HR', None), (os.path.join('LR_bicubic', 'X2'), 2)))
    for name, hr in images.items():
        lr = bicubic_downsample(hr, 2)
        for i, (y, x) in enumerate(corners, 1):
            assert np.array_equal(read_image_color(os.path.join(out, 'HR', subimages.subimage_name(name, i))),
                                  hr[y:y + 48, x:x + 48])
            lr_path = os.path.join(out, 'LR_bicubic', 'X2', subimages.subimage_name(name, i, 2))
            assert np.array_equal(read_image_color(lr_path), lr[y // 2:(y + 48) // 2, x // 2:(x + 48) // 2])


# ----------------------------------------------------------------------------- inputs stay untouched

def test_cache_into_hr_is_refused_and_hr_is_byte_identical(tmp_path):
    hr_dir, lr_dir = write_tiny_dataset(str(tmp_path / 'data'), 2, n=3, size=20)
    _, weights = write_tiny_model(str(tmp_path))
    opt_path = tmp_path / 'cache_into_hr.yml'
    opt_path.write_text(yaml.safe_dump(cache_options(hr_dir, hr_dir, lr_dir, weights)))
    inputs = read_tree(tmp_path / 'data')

    run = run_script('cache_backbone_outputs', '-opt', opt_path, '--overwrite')
    assert run.returncode == 1
    assert run.stderr == f'error: datasets.train.dataroot_base {hr_dir} is the input folder datasets.train.' \
                         f'dataroot_gt {hr_dir}; nothing is written into an input: choose another ' \
                         'datasets.train.dataroot_base\n'
    assert read_tree(tmp_path / 'data') == inputs
    assert sorted(os.listdir(tmp_path / 'data')) == ['HR', 'LR_bicubic']


# ----------------------------------------------------------------------------- interrupted runs

def test_prepare_killed_mid_rebuild_leaves_the_old_output(tmp_path):
    sources = write_sources(str(tmp_path / 'src'), {'A': 12, 'B': 8})
    out = str(tmp_path / 'train291')
    training_split.prepare_training_data(sources, out, [2], val_every=10)
    old = read_tree(out)

    proc = start_slowed('prepare_training_data', '--sources', *sources, '--out', out, '--scales', '2', '4',
                        '--val-every', '4', '--min-size', '0', '--overwrite')
    kill_when(proc, lambda: len(staging_files(out)) >= 4)
    assert read_tree(out) == old
    assert staging_files(out)  # the kill did land mid-build

    training_split.prepare_training_data(sources, out, [2, 4], val_every=4, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ['src', 'train291']  # the killed run's staging folder is gone
    assert len(os.listdir(os.path.join(out, 'val', 'LR_bicubic', 'X4'))) == 5


def test_create_lmdb_killed_mid_build_leaves_no_lmdb(tmp_path):
    folder = tmp_path / 'HR'
    for i in range(20):
        write_png(str(folder / f'img{i:02d}.png'), smooth_image(16, 16, seed=i))
    out = str(tmp_path / 'lmdb' / 'train_HR.lmdb')

    proc = start_slowed('create_lmdb', '--input', folder, '--out', out)
    kill_when(proc, lambda: any(f.endswith('data.mdb') for f in staging_files(out)))
    assert not os.path.exists(out)
    assert staging_files(out)

    summary = image_lmdb.create_lmdb(str(folder), out)
    assert summary.stored == 20 and os.listdir(tmp_path / 'lmdb') == ['train_HR.lmdb']
    assert image_lmdb.lmdb_keys(out) == [f'img{i:02d}' for i in range(20)]


def test_cache_killed_mid_run_keeps_complete_files_and_the_next_run_completes_it(tmp_path):
    hr_dir, lr_dir = write_tiny_dataset(str(tmp_path / 'data'), 2, n=4, size=20)
    _, weights = write_tiny_model(str(tmp_path))
    base_dir = str(tmp_path / 'base')
    opt = cache_options(base_dir, hr_dir, lr_dir, weights)
    opt_path = tmp_path / 'cache.yml'
    opt_path.write_text(yaml.safe_dump(opt))

    def cached_pngs():
        return sorted(f for f in os.listdir(base_dir) if f.endswith('.png') and not f.startswith('.')) \
            if os.path.isdir(base_dir) else []

    proc = start_slowed('cache_backbone_outputs', '-opt', opt_path, delay=0.5)
    kill_when(proc, lambda: len(cached_pngs()) >= 1)
    done = cached_pngs()
    assert 1 <= len(done) < 4
    assert_cache_matches(opt, done)

    backbone_cache.cache_backbone_outputs(opt)
    assert sorted(os.listdir(base_dir)) == ['cache_info.json', 'img0.png', 'img1.png', 'img2.png', 'img3.png']
    assert_cache_matches(opt, ['img0.png', 'img1.png', 'img2.png', 'img3.png'])
