"""The Python API: ``cfsrdelta_arch.SREngine.enhance`` on numpy (either channel order), PIL and torch
images gives the same pixels, returned as the kind of object it was given; bad input is one line."""
import numpy as np
import pytest
import torch
from conftest import smooth_image, write_tiny_model
from PIL import Image

from cfsrdelta_arch import SREngine
from cfsrdelta_arch.utils.image_io import tensor_to_image

H, W = 12, 9


@pytest.fixture(scope='module')
def engine(tmp_path_factory):
    opt, pth = write_tiny_model(str(tmp_path_factory.mktemp('tiny')))
    return SREngine.from_option_file(opt, weights=pth, device='cpu')


@pytest.fixture(scope='module')
def rgb():
    img = smooth_image(H, W, seed=3)
    assert np.abs(img[..., 0].astype(int) - img[..., 2]).max() > 50  # red and blue differ: a swap shows
    return img


def test_bgr_rgb_pil_and_tensor_give_the_same_pixels(engine, rgb):
    expected = engine.enhance(rgb, channel_order='rgb')
    assert expected.shape == (2 * H, 2 * W, 3) and expected.dtype == np.uint8
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.imread gives for the same file
    np.testing.assert_array_equal(engine.enhance(bgr, channel_order='bgr'), expected[..., ::-1])
    pil = engine.enhance(Image.fromarray(rgb))
    assert isinstance(pil, Image.Image) and pil.mode == 'RGB'
    np.testing.assert_array_equal(np.asarray(pil), expected)
    x = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255)
    chw, nchw = engine.enhance(x), engine.enhance(x[None])
    assert chw.shape == (3, 2 * H, 2 * W) and nchw.shape == (1, 3, 2 * H, 2 * W) and chw.dtype == torch.float32
    assert torch.equal(chw, nchw[0])
    np.testing.assert_array_equal(tensor_to_image(chw), expected)
    np.testing.assert_array_equal(tensor_to_image(engine.enhance(x.flip(0), channel_order='bgr').flip(0)), expected)
    # The check is sensitive: a BGR array run as RGB gives other pixels.
    assert np.abs(engine.enhance(bgr, channel_order='rgb')[..., ::-1].astype(int) - expected).max() > 5


def test_float_and_16_bit_arrays_and_pil_modes(engine, rgb):
    x = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255)
    sr = engine.enhance(x).numpy().transpose(1, 2, 0)
    for dtype in (np.float32, np.float64):
        out = engine.enhance((rgb / 255).astype(dtype), channel_order='rgb')
        assert out.dtype == dtype and out.shape == (2 * H, 2 * W, 3)
        np.testing.assert_allclose(out, sr, rtol=0, atol=1e-6)
    deep = engine.enhance(rgb.astype(np.uint16) * 257, channel_order='rgb')
    assert deep.dtype == np.uint16 and np.abs(deep.astype(float) - sr * 65535).max() <= 0.5 + 1e-3
    gray = rgb[..., 1].copy()
    alpha = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    for img, mode in ((gray, 'L'), (np.dstack([gray, alpha]), 'LA'), (np.dstack([rgb, alpha]), 'RGBA'),
                      (gray.astype(np.uint16) * 257, 'I;16')):
        out = engine.enhance(Image.fromarray(img))
        assert out.mode == mode and out.size == (2 * W, 2 * H)
        np.testing.assert_array_equal(np.asarray(out), engine.enhance(img, channel_order='rgb'))


@pytest.mark.parametrize('img, order, error', [
    ([[0, 1], [2, 3]], None, TypeError),
    (np.zeros((H, W, 3), np.uint8), None, ValueError),  # color array without channel order
    (np.zeros((H, W, 3), np.uint8), 'BGR', ValueError),
    (np.zeros((H, W, 5), np.uint8), 'rgb', ValueError),
    (np.zeros((2, H, W, 3), np.uint8), 'rgb', ValueError),
    (np.zeros((H, W, 3), np.int32), 'rgb', TypeError),
    (torch.zeros(1, 4, H, W), None, ValueError),
    (torch.zeros(H, W), None, ValueError),
    (torch.zeros(3, H, W, dtype=torch.uint8), None, TypeError),
    (Image.new('P', (W, H)), None, ValueError),
    (Image.new('RGB', (W, H)), 'bgr', ValueError),
])
def test_bad_input_is_one_line(engine, img, order, error):
    with pytest.raises(error) as info:
        engine.enhance(img, channel_order=order)
    assert '\n' not in str(info.value) and len(str(info.value)) > 20
