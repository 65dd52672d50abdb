"""Image files -> the model's input: 32x32 RGB uint8, the same way for training data and uploads.

One function decides how any PNG or JPEG becomes a 32x32x3 uint8 array, so an image the
fetch step puts in the training set and the same file uploaded to the inference server
become the same array. Pillow only (no torch): the inference image uses it too.

- EXIF orientation is applied (phone photos are often stored rotated).
- Transparency is composited over white, not dropped: dropping alpha exposes whatever
  colour the transparent pixels happen to hold.
- Greyscale, palette, CMYK and 16-bit images become 8-bit RGB.
- The whole image is resized to 32x32 (aspect ratio not kept, nothing cropped away),
  bilinear with antialiasing as torchvision's `Resize` does for PIL images.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 32
FORMATS = ("PNG", "JPEG")
SUFFIXES = (".png", ".jpg", ".jpeg")
_BACKGROUND = (255, 255, 255)


class ImageError(ValueError):
    """The bytes are not a usable PNG or JPEG image."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, transparency composited over white."""
    if image.mode == "P" or (image.mode in ("L", "RGB") and "transparency" in image.info):
        # palette transparency, or a PNG's single transparent key colour (tRNS)
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16/32-bit greyscale: scale to 8 bits rather than clip (Pillow's convert clips).
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def to_model_input(image: Image.Image) -> np.ndarray:
    """A decoded image as a (32, 32, 3) uint8 RGB array."""
    rgb = to_rgb(ImageOps.exif_transpose(image))
    if rgb.size != (SIZE, SIZE):
        rgb = rgb.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """PNG or JPEG bytes as a (32, 32, 3) uint8 array; ImageError naming `name` otherwise."""
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, on decompression bombs; make both an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in FORMATS:
                    raise ImageError(f"{name}: is {image.format}, expected PNG or JPEG")
                image.load()
                return to_model_input(image)
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image (expected PNG or JPEG)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # fmt: skip
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{name}: unreadable image ({exc})") from exc


def decode_file(path: Path) -> np.ndarray:
    return decode(path.read_bytes(), str(path))
