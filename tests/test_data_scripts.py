"""Data scripts and their data-layer modules: sub-image extraction, LMDB creation, benchmark LR,
training-data split, backbone-output cache, staged output folders, cache benchmark.

Everything runs in this process on small generated images; the scripts are called through
``main(argv)``, where an error is ``SystemExit('error: ...')`` (exit status 1 with the message on
stderr). tests/test_faults_data.py runs the failure cases as subprocesses, as a user would.
"""
import importlib.util
import os
import re
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.data.paired_image_dataset import PairedImageDataset

from conftest import (ROOT, TINY_CFSR, assert_cache_matches, cache_options, coordinate_image, encode_base,
                      read_tree, write_garbage, write_png, write_tiny_model)

from cfsrdelta_arch.data import backbone_cache, builder, image_lmdb, subimages, training_split
from cfsrdelta_arch.data.paired_cached_base_dataset import PairedCachedBaseDataset, decode_base
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, list_images, mod_crop, read_image_color
from cfsrdelta_arch.utils.image_io import image_to_tensor


def load_script(name):
    """Import scripts/<name>.py as a module, once."""
    module_name = f'scripts_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, 'scripts', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def run_failing(main, argv):
    """Run a script's main, expect an error exit, return its message."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = exc.value.code
    assert isinstance(message, str) and message.lstrip().startswith('error:'), message  # exit status 1
    return message


def nearest_lr(hr, scale):
    """A stand-in LR with exactly known alignment: every s-th pixel of the mod-cropped HR."""
    return np.ascontiguousarray(mod_crop(hr, scale)[::scale, ::scale])


# ----------------------------------------------------------------------------- extract_subimages

def test_crop_starts_follow_the_div2k_convention():
    assert subimages.crop_starts(100, 48, 24, 0) == [0, 24, 48, 52]  # 4 px left over > 0: a border-flush crop
    assert subimages.crop_starts(100, 48, 24, 4) == [0, 24, 48]  # 4 px left over <= thresh: none
    assert subimages.crop_starts(96, 48, 24, 0) == [0, 24, 48]  # exact fit
    assert subimages.crop_starts(48, 48, 24, 0) == [0]
    assert subimages.crop_starts(47, 48, 24, 0) == []
    assert subimages.crop_grid(60, 100, 48, 24, 0) == [(y, x) for y in (0, 12) for x in (0, 24, 48, 52)]


@pytest.mark.parametrize('workers', [1, 2])
def test_extract_counts_and_aligns_hr_and_lr_crops(tmp_path, workers):
    ex = load_script('extract_subimages')
    src = tmp_path / 'src'
    sizes = {'a': (103, 130), 'b': (48, 60)}  # 103 and 130 are not multiples of 4
    originals = {}
    for name, (h, w) in sizes.items():
        hr = coordinate_image(h, w)
        originals[name] = hr
        write_png(str(src / 'HR' / f'{name}.png'), hr)
        for s in (2, 4):
            write_png(str(src / f'X{s}' / f'{name}x{s}.png'), nearest_lr(hr, s))
    out = str(tmp_path / 'sub')
    ex.main(['--hr', str(src / 'HR'), '--lr', str(src / 'X2'), str(src / 'X4'), '--scales', '2', '4',
             '--out', out, '--crop-size', '48', '--step', '24', '--workers', str(workers)])

    # a: grid on the HR mod-cropped to 100x128; rows 0, 24, 48, 52; columns 0, 24, 48, 72, 80.
    # b: 48x60: one row; columns 0 and 12 (12 px > thresh 0 left after the first crop).
    expected = {'a': [(y, x) for y in (0, 24, 48, 52) for x in (0, 24, 48, 72, 80)],
                'b': [(0, 0), (0, 12)]}
    hr_files = sorted(os.listdir(os.path.join(out, 'HR')))
    assert len(hr_files) == 22
    for name, corners in expected.items():
        for i, (y, x) in enumerate(corners, start=1):
            sub = read_image_color(os.path.join(out, 'HR', f'{name}_s{i:03d}.png'))
            np.testing.assert_array_equal(sub, originals[name][y:y + 48, x:x + 48])
            for s in (2, 4):
                lr = read_image_color(os.path.join(out, 'LR_bicubic', f'X{s}', f'{name}_s{i:03d}x{s}.png'))
                assert lr.shape == (48 // s, 48 // s, 3)
                np.testing.assert_array_equal(lr, sub[::s, ::s])
    for s in (2, 4):
        assert len(os.listdir(os.path.join(out, 'LR_bicubic', f'X{s}'))) == 22


def test_extract_skips_unreadable_and_misaligned_images_and_fails_at_the_end(tmp_path, capsys):
    ex = load_script('extract_subimages')
    hr_dir, lr_dir = tmp_path / 'HR', tmp_path / 'X2'
    write_png(str(hr_dir / 'good.png'), coordinate_image(48, 48))
    write_png(str(lr_dir / 'goodx2.png'), nearest_lr(coordinate_image(48, 48), 2))
    write_garbage(str(hr_dir / 'broken.png'))
    write_png(str(lr_dir / 'brokenx2.png'), np.zeros((24, 24, 3), np.uint8))
    write_png(str(hr_dir / 'wrong.png'), coordinate_image(48, 48))
    write_png(str(lr_dir / 'wrongx2.png'), np.zeros((20, 24, 3), np.uint8))  # not 24x24
    write_png(str(hr_dir / 'tiny.png'), coordinate_image(20, 48))  # smaller than the crop: skipped, no error
    write_png(str(lr_dir / 'tinyx2.png'), nearest_lr(coordinate_image(20, 48), 2))
    out = tmp_path / 'sub'
    message = run_failing(ex.main, ['--hr', str(hr_dir), '--lr', str(lr_dir), '--scales', '2', '--out', str(out),
                                    '--crop-size', '48', '--step', '24'])
    assert '2 of 4 images failed' in message and 'broken.png' in message and 'wrong.png' in message
    err = capsys.readouterr().err
    assert 'cannot read image' in err and 'expected 24x24' in err
    assert os.listdir(out / 'HR') == ['good_s001.png']


def test_extract_clear_errors_before_any_work(tmp_path):
    ex = load_script('extract_subimages')
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert 'no images' in run_failing(ex.main, ['--hr', str(empty), '--out', str(tmp_path / 'o')])
    assert 'not a folder' in run_failing(ex.main, ['--hr', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')])
    hr_dir = tmp_path / 'HR'
    write_png(str(hr_dir / 'a.png'), coordinate_image(48, 48))
    write_png(str(tmp_path / 'X4' / 'bx4.png'), coordinate_image(12, 12))
    message = run_failing(ex.main, ['--hr', str(hr_dir), '--lr', str(tmp_path / 'X4'), '--scales', '4',
                                    '--out', str(tmp_path / 'o')])
    assert 'no LR image' in message and 'ax4' in message
    message = run_failing(ex.main, ['--hr', str(hr_dir), '--lr', str(tmp_path / 'X4'), '--scales', '3',
                                    '--out', str(tmp_path / 'o'), '--crop-size', '48', '--step', '20'])
    assert 'multiples of 3' in message
    ex.main(['--hr', str(hr_dir), '--out', str(tmp_path / 'o'), '--crop-size', '48'])
    message = run_failing(ex.main, ['--hr', str(hr_dir), '--out', str(tmp_path / 'o')])
    assert message == f"error: {tmp_path / 'o'} exists; pass --overwrite to rebuild it from scratch (everything " \
                      'in it is replaced) or choose another --out'
    message = run_failing(ex.main, ['--hr', str(hr_dir), '--out', str(hr_dir / 'sub')])
    assert message == f'error: --out {hr_dir / "sub"} is inside the input folder --hr {hr_dir}; nothing is written ' \
                      'into an input: choose another --out'
    assert os.listdir(hr_dir) == ['a.png']


# ----------------------------------------------------------------------------- create_lmdb

def write_base_cache(folder, hr_dir, seed=0):
    """16-bit SR_base PNGs named like the HR files, with values that do not fit in 8 bits."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(hr_dir)):
        h, w = cv2.imread(os.path.join(hr_dir, name)).shape[:2]
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(encode_base(rng.random((h, w, 3))))


@pytest.fixture
def lmdb_set(tmp_path, tiny_dataset):
    """HR, LR x4 and SR_base folders and their LMDBs built with scripts/create_lmdb.py."""
    cl = load_script('create_lmdb')
    hr_dir, lr_dir = tiny_dataset(4, n=3, size=48)
    base_dir = str(tmp_path / 'SRbase')
    write_base_cache(base_dir, hr_dir)
    db = {k: str(tmp_path / 'lmdb' / f'{k}.lmdb') for k in ('hr', 'lr', 'base')}
    cl.main(['--input', hr_dir, '--out', db['hr']])
    cl.main(['--input', lr_dir, '--out', db['lr'], '--strip-suffix', 'x4', '--match', db['hr'], '--workers', '2'])
    cl.main(['--input', base_dir, '--out', db['base'], '--match', db['hr']])
    return dict(hr_dir=hr_dir, lr_dir=lr_dir, base_dir=base_dir, db=db)


def dataset_options(d, lmdb, phase='val'):
    common = dict(name='t', phase=phase, scale=4, gt_size=32, use_hflip=False, use_rot=False)
    if lmdb:
        return dict(common, dataroot_gt=d['db']['hr'], dataroot_lq=d['db']['lr'], dataroot_base=d['db']['base'],
                    io_backend={'type': 'lmdb'})
    return dict(common, dataroot_gt=d['hr_dir'], dataroot_lq=d['lr_dir'], dataroot_base=d['base_dir'],
                filename_tmpl='{}x4', io_backend={'type': 'disk'})


def items_by_key(dataset):
    """Items of a folder-mode dataset by GT file stem (BasicSR lists folders in directory order)."""
    items = (dataset[i] for i in range(len(dataset)))
    return {os.path.splitext(os.path.basename(item['gt_path']))[0]: item for item in items}


def test_lmdb_meta_info_has_basicsr_format(lmdb_set):
    for kind, size in (('hr', 48), ('lr', 12), ('base', 48)):
        with open(os.path.join(lmdb_set['db'][kind], 'meta_info.txt')) as f:
            lines = f.read().splitlines()
        assert lines == [f'img{i}.png ({size},{size},3) 1' for i in range(3)]


def test_lmdb_round_trip_with_basicsr_paired_image_dataset(lmdb_set):
    from_folders = PairedImageDataset(dataset_options(lmdb_set, lmdb=False))
    from_lmdb = PairedImageDataset(dataset_options(lmdb_set, lmdb=True))
    assert len(from_lmdb) == len(from_folders) == 3
    by_key = items_by_key(from_folders)
    for i in range(3):
        b = from_lmdb[i]
        a = by_key[b['gt_path']]
        assert b['lq_path'] == b['gt_path'] == f'img{i}'  # LR key 'img<i>x4' was mapped to the HR key
        assert b['gt'].shape == (3, 48, 48) and b['lq'].shape == (3, 12, 12)
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])


def test_lmdb_round_trip_with_paired_cached_base_dataset_keeps_16_bits(lmdb_set):
    from_folders = PairedCachedBaseDataset(dataset_options(lmdb_set, lmdb=False))
    from_lmdb = PairedCachedBaseDataset(dataset_options(lmdb_set, lmdb=True))
    by_key = items_by_key(from_folders)
    for i in range(3):
        b = from_lmdb[i]
        a = by_key[b['gt_path']]
        for key in ('lq', 'gt', 'base'):
            assert torch.equal(a[key], b[key]), key
    with open(os.path.join(lmdb_set['base_dir'], 'img0.png'), 'rb') as f:
        stored = decode_base(f.read())
    assert not np.allclose(stored * 255, np.round(stored * 255))  # the values really need 16 bits


def test_lmdb_paired_cached_base_dataset_crops_aligned_training_patches(lmdb_set):
    # (its own test: py-lmdb opens an environment once per process, so no other dataset may hold it)
    train = PairedCachedBaseDataset(dataset_options(lmdb_set, lmdb=True, phase='train'))
    item = train[0]
    assert item['gt'].shape == item['base'].shape == (3, 32, 32) and item['lq'].shape == (3, 8, 8)


def test_lmdb_paired_cached_base_dataset_refuses_a_base_lmdb_with_other_keys(lmdb_set, tmp_path):
    cl = load_script('create_lmdb')
    partial_base = tmp_path / 'partial_base'
    partial_base.mkdir()
    for name in ('img0.png', 'img1.png'):  # img2 is missing from this cache
        os.link(os.path.join(lmdb_set['base_dir'], name), partial_base / name)
    db = str(tmp_path / 'partial_base.lmdb')
    cl.main(['--input', str(partial_base), '--out', db])
    with pytest.raises(ValueError, match='Keys in base_folder and gt_folder are different'):
        PairedCachedBaseDataset(dict(dataset_options(lmdb_set, lmdb=True), dataroot_base=db))


def test_lmdb_key_mapping_errors(lmdb_set, tmp_path):
    cl = load_script('create_lmdb')
    # without --strip-suffix the LR keys are 'img<i>x4', which --match rejects before writing anything
    message = run_failing(cl.main, ['--input', lmdb_set['lr_dir'], '--out', str(tmp_path / 'lr2.lmdb'),
                                    '--match', lmdb_set['db']['hr']])
    assert 'keys differ' in message and '--strip-suffix' in message
    assert not os.path.exists(tmp_path / 'lr2.lmdb')
    message = run_failing(cl.main, ['--input', lmdb_set['hr_dir'], '--out', str(tmp_path / 'x.lmdb'),
                                    '--strip-suffix', 'x4'])
    assert 'does not end with' in message
    assert '.lmdb' in run_failing(cl.main, ['--input', lmdb_set['hr_dir'], '--out', str(tmp_path / 'plain')])
    before = read_tree(lmdb_set['db']['hr'])
    message = run_failing(cl.main, ['--input', lmdb_set['lr_dir'], '--out', lmdb_set['db']['hr']])
    assert message.startswith(f"error: {lmdb_set['db']['hr']} exists; pass --overwrite")
    assert read_tree(lmdb_set['db']['hr']) == before
    message = run_failing(cl.main, ['--input', lmdb_set['hr_dir'], '--out', os.path.join(lmdb_set['hr_dir'], 'x.lmdb')])
    assert message.startswith(f"error: --out {lmdb_set['hr_dir']}{os.sep}x.lmdb is inside the input folder --input")
    message = run_failing(cl.main, ['--input', lmdb_set['lr_dir'], '--out', lmdb_set['db']['hr'], '--overwrite',
                                    '--match', lmdb_set['db']['hr'], '--strip-suffix', 'x4'])
    assert message.startswith(f"error: --out {lmdb_set['db']['hr']} is the input folder --match")
    assert read_tree(lmdb_set['db']['hr']) == before
    dotted = tmp_path / 'dotted'
    write_png(str(dotted / 'a.b.png'), np.zeros((4, 4, 3), np.uint8))
    assert 'must be ASCII without "."' in run_failing(cl.main, ['--input', str(dotted),
                                                                 '--out', str(tmp_path / 'd.lmdb')])


def test_lmdb_leaves_out_unreadable_images_and_fails_at_the_end(tmp_path, capsys):
    cl = load_script('create_lmdb')
    folder = tmp_path / 'imgs'
    write_png(str(folder / 'a.png'), coordinate_image(8, 8))
    write_garbage(str(folder / 'b.png'))
    write_png(str(folder / 'c.png'), coordinate_image(6, 10))
    out = str(tmp_path / 'x.lmdb')
    message = run_failing(cl.main, ['--input', str(folder), '--out', out])
    assert '1 of 3 images' in message and 'b.png' in message
    assert 'cannot read image' in capsys.readouterr().err
    with open(os.path.join(out, 'meta_info.txt')) as f:
        assert f.read().splitlines() == ['a.png (8,8,3) 1', 'c.png (6,10,3) 1']
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert 'no images' in run_failing(cl.main, ['--input', str(empty), '--out', str(tmp_path / 'e.lmdb')])


def test_lmdb_writer_grows_a_full_map(tmp_path):
    import lmdb
    writer = image_lmdb.LmdbWriter(str(tmp_path / 'w.lmdb'), map_size=64 * 1024, commit_bytes=100_000)
    values = {f'k{i}': bytes([i]) * 50_000 for i in range(8)}  # 400 kB into a 64 kB map
    for key, value in values.items():
        writer.put(key, value)
    writer.close()
    assert writer.resizes >= 2
    with lmdb.open(str(tmp_path / 'w.lmdb'), readonly=True, lock=False) as env, env.begin() as txn:
        assert all(txn.get(k.encode()) == v for k, v in values.items())


def test_map_size_estimate_scales_with_the_data():
    mib = 1 << 20
    # 800 JPEG-sized files of 1 MiB whose PNG encoding is 3x larger: 2 x 2400 MiB + 64 MiB
    assert image_lmdb.estimate_map_size(800 * mib, mib, 3 * mib) == (2 * 2400 + 64) * mib
    assert image_lmdb.estimate_map_size(10, 10, 10) % mib == 0


def test_read_image_color_keeps_16_bit_when_asked(tmp_path):
    path = write_png(str(tmp_path / 'g16.png'), np.full((5, 7), 40000, np.uint16))  # 16-bit grayscale
    img = read_image_color(path, keep_16bit=True)
    assert img.dtype == np.uint16 and img.shape == (5, 7, 3) and (img == 40000).all()
    assert read_image_color(path).dtype == np.uint8


# ----------------------------------------------------------------------------- make_benchmark_lr

def test_make_benchmark_lr_writes_edsr_names_and_protocol_lr(tmp_path):
    mb = load_script('make_benchmark_lr')
    hr_dir = tmp_path / 'HR'
    rng = np.random.default_rng(1)
    write_png(str(hr_dir / 'color.png'), rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    write_png(str(hr_dir / 'gray.png'), rng.integers(0, 256, (30, 25), dtype=np.uint8))  # mode L
    out = tmp_path / 'bench'
    mb.main(['--hr', str(hr_dir), '--out', str(out), '--scales', '2', '3'])
    assert os.path.realpath(out / 'HR') == os.path.realpath(hr_dir)
    for s in (2, 3):
        assert sorted(os.listdir(out / 'LR_bicubic' / f'X{s}')) == [f'colorx{s}.png', f'grayx{s}.png']
        for stem in ('color', 'gray'):
            lr = cv2.imread(str(out / 'LR_bicubic' / f'X{s}' / f'{stem}x{s}.png'), cv2.IMREAD_UNCHANGED)
            expected = bicubic_downsample(read_image_color(str(hr_dir / f'{stem}.png')), s)
            np.testing.assert_array_equal(lr, expected)


def test_make_benchmark_lr_clear_errors(tmp_path):
    mb = load_script('make_benchmark_lr')
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert 'no images' in run_failing(mb.main, ['--hr', str(empty), '--out', str(tmp_path / 'o1')])
    hr_dir = tmp_path / 'HR'
    hr_dir.mkdir()
    write_garbage(str(hr_dir / 'bad.png'))
    message = run_failing(mb.main, ['--hr', str(hr_dir), '--out', str(tmp_path / 'o2'), '--scales', '2'])
    assert 'cannot read image' in message and 'bad.png' in message


# ----------------------------------------------------------------------------- prepare_training_data

def write_sources(root, counts):
    """Folders of tiny 24x24 HR images: {'A': 25} -> root/A/A00.png ... A24.png."""
    folders = []
    for src, n in counts.items():
        for i in range(n):
            write_png(os.path.join(root, src, f'{src}{i:02d}.png'), coordinate_image(24, 24))
        folders.append(os.path.join(root, src))
    return folders


def test_prepare_training_data_holds_out_every_tenth_image_deterministically(tmp_path):
    prep = load_script('prepare_training_data')
    sources = write_sources(str(tmp_path / 'src'), {'A': 25, 'B': 12})
    train, val, skipped = training_split.split_sources(sources, 10)
    names = [os.path.basename(p) for p in val]
    assert names == ['A09.png', 'A19.png', 'B09.png'] and skipped == []
    assert len(train) == 34 and not set(train) & set(val)
    assert training_split.split_sources(sources, 10) == (train, val, skipped)

    out = tmp_path / 'train291'
    prep.main(['--sources', *sources, '--out', str(out), '--scales', '2', '4', '--min-size', '0'])
    assert sorted(os.listdir(out / 'val' / 'HR')) == ['A09.png', 'A19.png', 'B09.png']
    assert len(os.listdir(out / 'train' / 'HR')) == 34
    assert sorted(os.listdir(out / 'val' / 'LR_bicubic' / 'X4')) == ['A09x4.png', 'A19x4.png', 'B09x4.png']


def test_prepare_training_data_never_writes_into_or_around_a_source(tmp_path):
    prep = load_script('prepare_training_data')
    sources = write_sources(str(tmp_path / 'src'), {'A': 3, 'B': 2})
    before = read_tree(tmp_path / 'src')
    for out, relation, source in ((os.path.join(sources[0], 'out'), 'is inside', sources[0]),
                                  (sources[1], 'is', sources[1]),
                                  (str(tmp_path / 'src'), 'contains', sources[0])):
        message = run_failing(prep.main, ['--sources', *sources, '--out', out, '--min-size', '0', '--overwrite'])
        assert message == f'error: --out {out} {relation} the input folder --sources {source}; nothing is written ' \
                          'into an input: choose another --out'
    assert read_tree(tmp_path / 'src') == before
    assert sorted(os.listdir(tmp_path)) == ['src']  # no staging folder either


# ----------------------------------------------------------------------------- builder (staged output folders)

def test_check_apart_names_how_an_output_meets_an_input(tmp_path):
    inputs = [('--hr', str(tmp_path / 'data' / 'HR'))]
    builder.check_apart(str(tmp_path / 'data' / 'sub'), '--out', inputs)  # a sibling is fine
    builder.check_apart(str(tmp_path / 'data' / 'HR2'), '--out', inputs)  # a name prefix is no overlap
    (tmp_path / 'data' / 'HR').mkdir(parents=True)
    os.symlink(tmp_path / 'data' / 'HR', tmp_path / 'link')
    for out, relation in ((tmp_path / 'data' / 'HR', 'is'), (tmp_path / 'link', 'is'),
                          (tmp_path / 'link' / 'x', 'is inside'), (tmp_path / 'data', 'contains')):
        with pytest.raises(ValueError) as err:
            builder.check_apart(str(out), '--out', inputs)
        assert str(err.value).startswith(f'--out {out} {relation} the input folder --hr {tmp_path}')


def test_staged_folder_replaces_the_whole_output_or_nothing(tmp_path):
    target = tmp_path / 'out'
    (target / 'old').mkdir(parents=True)
    (target / 'old' / 'a.txt').write_text('old')
    (tmp_path / '.out.part-deadbeef').mkdir()  # left by a killed run: removed by the next build
    (tmp_path / '.out.part-deadbeef' / 'half.txt').write_text('half')
    with pytest.raises(FileExistsError, match='pass --overwrite'):
        with builder.staged_folder(str(target), overwrite=False):
            pass
    with pytest.raises(RuntimeError):
        with builder.staged_folder(str(target), overwrite=True) as staging:
            (tmp_path / staging / 'new.txt').write_text('new')
            raise RuntimeError('interrupted')
    assert read_tree(target) == {os.path.join('old', 'a.txt'): b'old'}
    assert sorted(os.listdir(tmp_path)) == ['out']
    with builder.staged_folder(str(target), overwrite=True) as staging:
        assert os.path.dirname(staging) == str(tmp_path) and not os.listdir(staging)
        (tmp_path / staging / 'new.txt').write_text('new')
        assert read_tree(target) == {os.path.join('old', 'a.txt'): b'old'}  # untouched until the end
    assert read_tree(target) == {'new.txt': b'new'}
    assert sorted(os.listdir(tmp_path)) == ['out']
    # an existing empty folder needs no --overwrite; a symlinked output is rebuilt where it points
    (tmp_path / 'real').mkdir()
    os.symlink(tmp_path / 'real', tmp_path / 'link')
    with builder.staged_folder(str(tmp_path / 'link'), overwrite=False) as staging:
        (tmp_path / staging / 'x.txt').write_text('x')
    assert os.path.islink(tmp_path / 'link') and read_tree(tmp_path / 'real') == {'x.txt': b'x'}


# ----------------------------------------------------------------------------- backbone-output cache

SWINIR = dict(type='SwinIR', upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[1], num_heads=[2],
              mlp_ratio=2, upsampler='pixelshuffledirect')


@pytest.fixture
def cache_setup(tmp_path, tiny_dataset):
    """Factory: ``cache_setup(backbone=TINY_CFSR, pad_multiple=1, seed=0)`` -> train options whose cache
    (tmp_path/base) is for 3 tiny x2 pairs (LR 10x10); the backbone weights are random (``seed``)."""
    hr_dir, lr_dir = tiny_dataset(2, n=3, size=20)

    def make(backbone=TINY_CFSR, pad_multiple=1, seed=0):
        folder = tmp_path / f"weights_{backbone['type']}_{seed}"
        folder.mkdir(exist_ok=True)
        _, weights = write_tiny_model(str(folder), network=backbone, seed=seed)
        return cache_options(tmp_path / 'base', hr_dir, lr_dir, weights, backbone, pad_multiple)
    return make


def cached(opt, name):
    """The cached SR_base of GT file ``name`` as float RGB (3, H, W)."""
    path = os.path.join(opt['datasets']['train']['dataroot_base'], name)
    return image_to_tensor(read_image_color(path, keep_16bit=True), bgr=True)[0]


@pytest.mark.parametrize('backbone,pad_multiple', [(TINY_CFSR, 1), (SWINIR, 4)], ids=['CFSR', 'SwinIR_pad4'])
def test_cache_holds_what_the_delta_model_computes_on_the_fly(cache_setup, backbone, pad_multiple):
    # SwinIR: LR 10x10 is no multiple of its window (4); without backbone_pad_multiple it cannot run at all.
    opt = cache_setup(backbone, pad_multiple)
    reports = backbone_cache.cache_backbone_outputs(opt, tile_size=None)
    base_dir = opt['datasets']['train']['dataroot_base']
    assert [(r.computed, r.kept, r.removed) for r in reports] == [(3, 0, 0)]
    assert sorted(os.listdir(base_dir)) == ['cache_info.json', 'img0.png', 'img1.png', 'img2.png']
    assert_cache_matches(opt, ['img0.png', 'img1.png', 'img2.png'])
    with open(os.path.join(base_dir, 'img0.png'), 'rb') as f:
        assert decode_base(f.read()).shape == (20, 20, 3)
    # the dataset reads it back as the same tensor
    item = PairedCachedBaseDataset(dict(opt['datasets']['train'], phase='val', scale=2))[0]
    assert torch.equal(item['base'], cached(opt, os.path.basename(item['gt_path'])))


def test_cache_rerun_keeps_valid_files_recomputes_changed_ones_and_removes_stale_ones(cache_setup):
    opt = cache_setup()
    d = opt['datasets']['train']
    backbone_cache.cache_backbone_outputs(opt)
    first = read_tree(d['dataroot_base'])
    # img1's LR changes, img2 leaves the dataset, and a killed atomic write left its temporary file
    lr1 = os.path.join(d['dataroot_lq'], 'img1x2.png')
    write_png(lr1, read_image_color(lr1)[::-1].copy())
    os.remove(os.path.join(d['dataroot_gt'], 'img2.png'))
    os.remove(os.path.join(d['dataroot_lq'], 'img2x2.png'))
    write_garbage(os.path.join(d['dataroot_base'], '.img0.png.x1y2.part'))
    reports = backbone_cache.cache_backbone_outputs(opt)
    assert [(r.computed, r.kept, r.removed) for r in reports] == [(1, 1, 2)]
    second = read_tree(d['dataroot_base'])
    assert sorted(second) == ['cache_info.json', 'img0.png', 'img1.png']
    assert second['img0.png'] == first['img0.png'] and second['img1.png'] != first['img1.png']
    assert_cache_matches(opt, ['img0.png', 'img1.png'])
    reports = backbone_cache.cache_backbone_outputs(opt)
    assert [(r.computed, r.kept, r.removed) for r in reports] == [(0, 2, 0)]
    assert read_tree(d['dataroot_base']) == second


def test_cache_of_another_backbone_is_refused_and_overwrite_rebuilds_it(cache_setup, tmp_path):
    opt = cache_setup(seed=0)
    base_dir = opt['datasets']['train']['dataroot_base']
    backbone_cache.cache_backbone_outputs(opt)
    first = read_tree(base_dir)
    other = cache_setup(seed=1)  # same backbone options, other weights
    with pytest.raises(ValueError) as err:
        backbone_cache.cache_backbone_outputs(other)
    assert str(err.value).startswith(f'{base_dir} holds SR_base of another backbone')
    assert read_tree(base_dir) == first
    reports = backbone_cache.cache_backbone_outputs(other, overwrite=True)
    assert [(r.computed, r.kept, r.removed) for r in reports] == [(3, 0, 0)]
    assert_cache_matches(other, ['img0.png', 'img1.png', 'img2.png'])
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]  # no staging folder left


def test_cache_never_writes_into_an_input_or_a_foreign_folder(cache_setup, tmp_path):
    opt = cache_setup()
    d = opt['datasets']['train']
    inputs = read_tree(tmp_path / 'tiny_x2')
    for base, relation, name in ((d['dataroot_gt'], 'is', 'dataroot_gt'),
                                 (os.path.join(d['dataroot_lq'], 'base'), 'is inside', 'dataroot_lq'),
                                 (str(tmp_path / 'tiny_x2'), 'contains', 'dataroot_gt')):
        bad = dict(opt, datasets={'train': dict(d, dataroot_base=base)})
        with pytest.raises(ValueError) as err:
            backbone_cache.cache_backbone_outputs(bad, overwrite=True)
        assert str(err.value).startswith(f'datasets.train.dataroot_base {base} {relation} the input folder '
                                         f'datasets.train.{name} ')
    assert read_tree(tmp_path / 'tiny_x2') == inputs
    write_png(os.path.join(d['dataroot_base'], 'photo.png'), coordinate_image(4, 4))  # not a cache
    with pytest.raises(ValueError, match='holds files but no cache_info.json'):
        backbone_cache.cache_backbone_outputs(opt)
    assert os.listdir(d['dataroot_base']) == ['photo.png']


# ----------------------------------------------------------------------------- bench_cache

def test_bench_cache_options_compare_like_with_like():
    bench = load_script('bench_cache')
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(['--help'])
    assert exc.value.code == 0
    opt = bench.load_train_options(os.path.join(ROOT, 'options', 'train', 'train_CFSRDelta_RefineNet_x4_cached.yml'),
                                   8, 64, 0)
    cached = opt['datasets']['train']
    assert cached['type'] == 'PairedCachedBaseDataset' and (cached['batch_size_per_gpu'], cached['gt_size']) == (8, 64)
    assert opt['network_g']['refiner']['type'] == 'RefineNet'
    fly = bench.on_the_fly_dataset_options(cached)
    assert fly['type'] == 'PairedImageDataset' and 'dataroot_base' not in fly
    for key in ('dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'gt_size', 'batch_size_per_gpu', 'scale', 'phase'):
        assert fly[key] == cached[key], key
    table = bench.format_table([_FakeVariant('on the fly', 1.0), _FakeVariant('cached', 0.25)])
    assert re.search(r'^\| cached \| 0\.0000 \| 0\.2500 \| 0\.2500 \| 0\.2500 \| 4\.00x \|$', table, re.M), table


class _FakeVariant:
    def __init__(self, name, seconds):
        self.name, self.data_s, self.step_s = name, [0.0, 0.0], [seconds, seconds]


def test_list_images_skips_hidden_files(tmp_path):
    """A killed write's temporary file and macOS '._' metadata are not images of the folder."""
    for name in ('a.png', '.a.png.x1y2.part.png', '._b.png'):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
    assert list_images(str(tmp_path)) == [str(tmp_path / 'a.png')]
