"""The taggers' preprocessing: RGB on white -> BGR, white square padding, model size, float32 0-255."""

import numpy as np
import pytest
from PIL import Image

from lora_trainer.captions import load_image, prepare_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def bgr(rgb):
    return list(rgb[::-1])


def image_from_rows(rows, mode="RGB"):
    height, width = len(rows), len(rows[0])
    image = Image.new(mode, (width, height))
    image.putdata([px for row in rows for px in row])
    return image


def test_wide_image_is_bgr_padded_below_with_white():
    out = prepare_image(image_from_rows([[RED, BLUE]]), 2)
    assert out.dtype == np.float32 and out.shape == (2, 2, 3) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, np.array([[bgr(RED), bgr(BLUE)], [bgr(WHITE), bgr(WHITE)]], np.float32))


def test_tall_image_is_centred_between_white_columns():
    out = prepare_image(image_from_rows([[RED], [GREEN], [(10, 20, 30)]]), 3)
    expected = np.array([[bgr(WHITE), bgr(c), bgr(WHITE)] for c in (RED, GREEN, (10, 20, 30))], np.float32)
    np.testing.assert_array_equal(out, expected)


def test_odd_padding_puts_the_extra_pixel_after_the_image():
    out = prepare_image(image_from_rows([[RED, RED, RED, RED]] * 1), 4)  # 4x1: rows 0 white, 1 image, 2-3 white
    assert (out[1] == bgr(RED)).all()
    assert (out[[0, 2, 3]] == 255).all()


def test_transparency_is_composited_on_white():
    rgba = image_from_rows([[(255, 0, 0, 255), (0, 255, 0, 0), (0, 0, 255, 128)]], "RGBA")
    out = prepare_image(rgba, 3)
    assert out[1, 0].tolist() == bgr(RED)  # opaque: unchanged
    assert out[1, 1].tolist() == bgr(WHITE)  # fully transparent: white, whatever its colour
    np.testing.assert_allclose(out[1, 2], [255, 127, 127], atol=1)  # half blue on white
    assert (out[[0, 2]] == 255).all()


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_other_transparent_modes_are_composited_on_white(mode):
    if mode == "LA":
        image = image_from_rows([[(0, 255), (0, 0)]], "LA")
    else:
        image = Image.new("P", (2, 1))
        image.putpalette([0, 0, 0, 9, 9, 9] + [0] * 762)
        image.putdata([0, 1])
        image.info["transparency"] = 1
    out = prepare_image(image, 2)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == bgr(WHITE)


def test_grayscale_and_cmyk_become_three_channels():
    for mode, colour in (("L", 7), ("CMYK", (0, 0, 0, 0))):
        out = prepare_image(Image.new(mode, (4, 4), colour), 4)
        assert out.shape == (4, 4, 3)


def test_resized_to_the_model_size_with_uniform_colour_preserved():
    out = prepare_image(Image.new("RGB", (40, 40), (10, 20, 30)), 8)
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    assert (out == [30, 20, 10]).all()


def test_resize_of_a_padded_image_keeps_white_margins_and_colour_centre():
    out = prepare_image(Image.new("RGB", (60, 30), (10, 20, 30)), 12)  # 60x60, the image in rows 15-44
    assert out.shape == (12, 12, 3)
    assert (out[0] == 255).all() and (out[-1] == 255).all()  # rows 0-4 and 55-59: white only
    assert (out[5:7] == [30, 20, 10]).all()  # rows 25-34 and their neighbours: the image only


def test_load_image_applies_exif_orientation(tmp_path):
    image = image_from_rows([[RED, BLUE]])  # stored 2x1; orientation 6 = rotate 90 degrees clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "rotated.jpg").size == (1, 2)


def test_load_image_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(bad)
