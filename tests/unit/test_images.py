import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_pipeline.images import SIZE, ImageError, decode, decode_file

ORIENTATION = 0x0112  # the EXIF Orientation tag


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def assert_model_input(array: np.ndarray) -> None:
    assert array.shape == (SIZE, SIZE, 3)
    assert array.dtype == np.uint8


def test_large_rgb_jpeg_becomes_32x32_rgb(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    image = Image.new("RGB", (640, 480), (200, 40, 90))
    image.paste(noise(100, 80), (10, 10))
    image.save(path, format="JPEG", quality=90)
    out = decode_file(path)
    assert_model_input(out)
    # Far from the noisy patch the solid colour survives resize and JPEG (within JPEG's error).
    np.testing.assert_allclose(out[-1, -1].astype(int), (200, 40, 90), atol=4)


def test_small_png_is_upscaled_to_32x32() -> None:
    out = decode(encode(Image.new("RGB", (5, 3), (12, 34, 56))), "small.png")
    assert_model_input(out)
    assert (out == (12, 34, 56)).all()  # a solid colour stays exactly that colour


def test_32x32_png_is_returned_pixel_for_pixel() -> None:
    image = noise(32, 32, seed=3)
    np.testing.assert_array_equal(decode(encode(image)), np.asarray(image))


@pytest.mark.parametrize("grey", [0, 77, 255])
def test_greyscale_png_becomes_equal_rgb_channels(grey: int) -> None:
    out = decode(encode(Image.new("L", (40, 50), grey)))
    assert_model_input(out)
    assert (out == grey).all()


def test_fully_transparent_rgba_is_composited_over_white() -> None:
    # The hidden colour is black: dropping alpha instead of compositing would give black.
    out = decode(encode(Image.new("RGBA", (20, 20), (0, 0, 0, 0))))
    assert_model_input(out)
    assert (out == 255).all()


def test_opaque_rgba_keeps_its_colour() -> None:
    out = decode(encode(Image.new("RGBA", (20, 20), (255, 0, 0, 255))))
    assert (out == (255, 0, 0)).all()


def test_half_transparent_rgba_is_blended_with_white() -> None:
    out = decode(encode(Image.new("RGBA", (32, 32), (0, 0, 0, 128))))
    # 0 * 128/255 + 255 * 127/255 = 127 (Pillow rounds to 127 or 128)
    assert np.isin(out, (127, 128)).all()


def test_palette_png_with_transparency_entry() -> None:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 - 2) * 3)  # 0: black, 1: red
    image.paste(1, (0, 16, 32, 32))  # bottom half red, top half index 0
    data = encode(image, transparency=0)  # index 0 transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = decode(data)
    assert_model_input(out)
    assert (out[:16] == 255).all()  # transparent black -> white
    assert (out[16:] == (255, 0, 0)).all()


def test_palette_png_without_transparency_keeps_palette_colours() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 - 2) * 3)
    assert (decode(encode(image)) == (10, 200, 30)).all()


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    pixels = np.empty((32, 32), dtype=np.uint16)
    pixels[:, :16] = 65535
    pixels[:, 16:] = 257 * 100  # 100 on the 8-bit scale; clipping would make it 255
    data = encode(Image.fromarray(pixels))
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode(data)
    assert_model_input(out)
    assert (out[:, :16] == 255).all()
    assert (out[:, 16:] == 100).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_transparency_key_colour_is_composited_over_white(mode: str) -> None:
    # A tRNS chunk on an L or RGB PNG marks one colour transparent (here black): the module
    # promises transparency is composited over white, not dropped, for every mode.
    image = Image.new(mode, (32, 32), 0 if mode == "L" else (0, 0, 0))
    image.paste(200 if mode == "L" else (200, 200, 200), (0, 0, 16, 32))
    data = encode(image, transparency=0 if mode == "L" else (0, 0, 0))
    out = decode(data)
    assert (out[:, :16] == 200).all()
    assert (out[:, 16:] == 255).all()


def test_exif_orientation_is_applied() -> None:
    # Stored 64 wide x 32 high: left half black, right half white. Orientation 6 means
    # "rotate 90 degrees clockwise to display": the left half ends up on top.
    stored = Image.new("RGB", (64, 32), (0, 0, 0))
    stored.paste((255, 255, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    decoded = decode(encode(stored, "JPEG", exif=exif, quality=95))
    assert_model_input(decoded)
    out = decoded.astype(int)
    assert out[:12].max() < 30  # top: black
    assert out[-12:].min() > 225  # bottom: white
    # The left and right halves are now alike (each half black on top, white below).
    assert abs(out[:, :16].mean() - out[:, 16:].mean()) < 5


def test_exif_orientation_absent_keeps_layout() -> None:
    stored = Image.new("RGB", (64, 32), (0, 0, 0))
    stored.paste((255, 255, 255), (32, 0, 64, 32))
    out = decode(encode(stored, "JPEG", quality=95)).astype(int)
    assert out[:, :12].max() < 30
    assert out[:, -12:].min() > 225


def test_non_image_bytes_are_refused_naming_the_input() -> None:
    with pytest.raises(ImageError, match=r"^upload\.png: not an image"):
        decode(b"hello", "upload.png")


def test_decode_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"hello")
    with pytest.raises(ImageError, match="not an image") as info:
        decode_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "anim.gif"), ("BMP", "old.bmp")])
def test_other_formats_are_refused(fmt: str, name: str) -> None:
    data = encode(Image.new("RGB", (8, 8), (1, 2, 3)), fmt)
    with pytest.raises(ImageError, match=rf"^{name}: is {fmt}, expected PNG or JPEG"):
        decode(data, name)


def test_truncated_png_is_refused_naming_the_input() -> None:
    data = encode(noise(64, 64))
    with pytest.raises(ImageError, match=r"^cut\.png: ") as info:
        decode(data[: len(data) // 2], "cut.png")
    assert "not an image" not in str(info.value)  # it is a PNG, just cut short
    assert "truncated" in str(info.value) or "unreadable" in str(info.value)


def test_truncated_jpeg_is_refused() -> None:
    data = encode(noise(64, 64), "JPEG")
    with pytest.raises(ImageError, match=r"^cut\.jpg: "):
        decode(data[: len(data) // 2], "cut.jpg")
