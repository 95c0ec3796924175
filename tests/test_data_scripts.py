"""Data scripts: sub-image extraction, LMDB creation, benchmark LR, training-data split, cache benchmark.

Everything runs on small generated images; the scripts are called through ``main(argv)``, where an
error is ``SystemExit('error: ...')`` (exit status 1 with the message on stderr).
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

from cfsrdelta_arch.data.paired_cached_base_dataset import PairedCachedBaseDataset, decode_base, encode_base
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, mod_crop, read_image_color

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def load_script(name):
    """Import scripts/<name>.py as a module (registered, so that multiprocessing can pickle its objects)."""
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


def write_png(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)
    return path


def write_garbage(path):
    with open(path, 'wb') as f:
        f.write(b'this is not an image')
    return path


def coordinate_image(h, w):
    """uint8 (h, w, 3) image whose pixels encode their position, so any misalignment shows."""
    y, x = np.mgrid[:h, :w]
    return np.stack([y % 256, x % 256, (3 * y + 5 * x) % 256], axis=-1).astype(np.uint8)


def nearest_lr(hr, scale):
    """A stand-in LR with exactly known alignment: every s-th pixel of the mod-cropped HR."""
    return np.ascontiguousarray(mod_crop(hr, scale)[::scale, ::scale])


# ----------------------------------------------------------------------------- extract_subimages

def test_crop_starts_follow_the_div2k_convention():
    ex = load_script('extract_subimages')
    assert ex.crop_starts(100, 48, 24, 0) == [0, 24, 48, 52]  # 4 px left over > 0: a border-flush crop
    assert ex.crop_starts(100, 48, 24, 4) == [0, 24, 48]  # 4 px left over <= thresh: none
    assert ex.crop_starts(96, 48, 24, 0) == [0, 24, 48]  # exact fit
    assert ex.crop_starts(48, 48, 24, 0) == [0]
    assert ex.crop_starts(47, 48, 24, 0) == []
    assert ex.crop_grid(60, 100, 48, 24, 0) == [(y, x) for y in (0, 12) for x in (0, 24, 48, 52)]


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
    assert 'not empty' in run_failing(ex.main, ['--hr', str(hr_dir), '--out', str(tmp_path / 'o')])


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
    assert 'exists' in run_failing(cl.main, ['--input', lmdb_set['hr_dir'], '--out', lmdb_set['db']['hr']])
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
    cl = load_script('create_lmdb')
    writer = cl.LmdbWriter(str(tmp_path / 'w.lmdb'), map_size=64 * 1024, commit_bytes=100_000)
    values = {f'k{i}': bytes([i]) * 50_000 for i in range(8)}  # 400 kB into a 64 kB map
    for key, value in values.items():
        writer.put(key, value)
    writer.close()
    assert writer.resizes >= 2
    with lmdb.open(str(tmp_path / 'w.lmdb'), readonly=True, lock=False) as env, env.begin() as txn:
        assert all(txn.get(k.encode()) == v for k, v in values.items())


def test_map_size_estimate_scales_with_the_data():
    cl = load_script('create_lmdb')
    mib = 1 << 20
    # 800 JPEG-sized files of 1 MiB whose PNG encoding is 3x larger: 2 x 2400 MiB + 64 MiB
    assert cl.estimate_map_size(800 * mib, mib, 3 * mib) == (2 * 2400 + 64) * mib
    assert cl.estimate_map_size(10, 10, 10) % mib == 0


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
    train, val, skipped = prep.split_sources(sources, 10)
    names = [os.path.basename(p) for p in val]
    assert names == ['A09.png', 'A19.png', 'B09.png'] and skipped == []
    assert len(train) == 34 and not set(train) & set(val)
    assert prep.split_sources(sources, 10) == (train, val, skipped)

    out = tmp_path / 'train291'
    prep.main(['--sources', *sources, '--out', str(out), '--scales', '2', '4', '--min-size', '0'])
    assert sorted(os.listdir(out / 'val' / 'HR')) == ['A09.png', 'A19.png', 'B09.png']
    assert len(os.listdir(out / 'train' / 'HR')) == 34
    assert sorted(os.listdir(out / 'val' / 'LR_bicubic' / 'X4')) == ['A09x4.png', 'A19x4.png', 'B09x4.png']


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
