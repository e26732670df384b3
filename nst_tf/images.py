"""Finding, reading and writing images (Pillow + numpy only, so it imports without TensorFlow).

Every problem a user can cause (wrong path, broken file, failed download) becomes a one-line
`UserError` that names the file and the fix, instead of a Pillow or urllib traceback.
"""

import contextlib
import glob
import hashlib
import http.client
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_tf.errors import UserError, WriteError
from nst_tf.files import md5_file, open_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what folders of pictures are searched for
DOWNLOAD_TIMEOUT = 30  # seconds; per socket operation, so a stalled server cannot hang a run
# Wikimedia refuses urllib's default User-Agent; its policy asks for a descriptive one.
USER_AGENT = "nst-tf/0.1 (neural style transfer; Python urllib)"
_FIX_FILE = "give a complete JPEG or PNG file"


def images_in(where: Path) -> list[Path]:
    """The image files (IMAGE_SUFFIXES) in folder `where`, or matching `where` as a glob, in
    no particular order."""
    found = where.iterdir() if where.is_dir() else map(Path, glob.glob(str(where)))
    return [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


class ImageSource(Protocol):
    """What a config's content/style node provides (an OmegaConf node or a dataclass)."""

    name: str | None  # preset name, e.g. "starry"; None for a user file
    path: str | None  # user's own file; when set it wins over everything else
    file: str | None  # preset's file name in a local images folder, e.g. "starry_night.jpg"
    url: str | None  # original download URL (None: no stable URL known)
    md5: str | None  # md5 of the original download


def _one_line(text: object) -> str:
    """Messages must stay one line even when an OS or HTTP error text is not."""
    return " ".join(str(text).split())


def resolve_image(
    src: ImageSource, role: str, images_dir: Path | str | None, cache_dir: Path | str
) -> Path:
    """Return a local file for `src`: user path, else images folder, else cache, else download.

    A local images folder is matched by file name only (its copies may be resized, so their md5
    differs from the original's); the cache and downloads are md5-checked when an md5 is known.
    """
    # getattr: a user's node may only have `path`; struct OmegaConf nodes raise AttributeError.
    name = getattr(src, "name", None)
    user_path = getattr(src, "path", None)
    file = getattr(src, "file", None)
    url = getattr(src, "url", None)
    md5 = getattr(src, "md5", None)

    if user_path:  # "" from `content.path=` on the command line counts as unset
        path = Path(user_path).expanduser()
        if path.is_dir():
            raise UserError(
                _one_line(
                    f"{role}.path '{path}' is a folder, not an image; "
                    f"set {role}.path=/your/image.jpg"
                )
            )
        if not path.exists():
            raise UserError(
                _one_line(
                    f"{role} image '{path}' ({role}.path) not found; "
                    f"fix {role}.path or leave it unset to use a preset"
                )
            )
        return path

    if not file:
        raise UserError(f"no {role} image given; set {role}.path=/your/image.jpg or pick a preset")
    if Path(file).name != file or file in (".", ".."):
        # A preset's file is joined onto folders; a path here could escape the cache.
        raise UserError(
            _one_line(
                f"{role} preset file '{file}' must be a plain file name; "
                f"fix the preset or set {role}.path=/your/image.jpg"
            )
        )
    label = f"{role} image '{name}' ({file})" if name else f"{role} image ({file})"
    fix = f"set paths.images=/folder/with/{file} or {role}.path=/your/image.jpg"

    if images_dir is not None:
        local = Path(images_dir).expanduser() / file
        if local.is_file():
            return local

    cache_images = Path(cache_dir).expanduser() / "images"
    cached = cache_images / file
    cache_state = f"not cached ({cache_images})"
    if cached.is_file():
        if not md5 or md5_file(cached) == md5.lower():
            return cached
        # A partial or replaced file: fetch it again; the download below replaces it.
        cache_state = f"the cached copy {cached} has the wrong md5"

    where = f"not in paths.images ({images_dir}), {cache_state}"
    if not url:
        raise UserError(
            _one_line(f"{label} not found: {where}, and no download URL is known; {fix}")
        )

    try:
        cache_images.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            _one_line(
                f"cannot create the image cache {cache_images} ({e.strerror or e}); "
                f"set NST_CACHE=/a/writable/folder or {fix}"
            )
        ) from e

    try:
        # Atomic: readers see the old file or the whole new one; a partial or bad download
        # (any exception below, the md5 check's included) is never left behind.
        with open_atomic(cached, ".part") as out:
            digest = hashlib.md5(usedforsecurity=False)
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            got = digest.hexdigest()
            if md5 and got != md5.lower():
                raise UserError(
                    _one_line(
                        f"{label}: the download from {url} has md5 {got}, expected {md5}, "
                        f"so it was not kept (the file at that URL changed); {fix}"
                    )
                )
        return cached
    except urllib.error.HTTPError as e:
        reason = f"HTTP {e.code} {e.reason}"
        e.close()  # an HTTPError holds the open response
    except urllib.error.URLError as e:
        reason = str(e.reason)
    except TimeoutError:
        reason = f"timed out after {DOWNLOAD_TIMEOUT} s"
    except (OSError, http.client.HTTPException, ValueError) as e:
        # ValueError: a malformed URL; HTTPException: e.g. the connection dropped mid-file.
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    raise UserError(
        _one_line(f"{label} not found: {where}, and downloading {url} failed ({reason}); {fix}")
    )


def read_rgb(path: Path | str) -> Image.Image:
    """Fully decode `path` into an upright 8-bit RGB image, or raise a one-line UserError."""
    path = Path(path)

    def fail(problem: str, fix: str = _FIX_FILE) -> UserError:
        return UserError(_one_line(f"cannot read image '{path}': {problem}; {fix}"))

    if path.exists() and not path.is_file() and not path.is_dir():
        # Opening a FIFO or a device blocks, or reads for ever.
        raise fail("it is not a regular file (a pipe, socket or device)", "give an image file")
    try:
        with Image.open(path) as img:
            try:
                img.load()  # Image.open is lazy: decode now so truncated files fail here
            except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
                text = _one_line(e) or type(e).__name__
                if "truncated" in text:
                    raise fail("file is truncated") from e
                raise fail(f"file is corrupt ({text})") from e
            # A broken EXIF block should not make an otherwise fine photo unusable.
            with contextlib.suppress(Exception):
                img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except FileNotFoundError as e:
        raise fail("no such file", "check the path") from e
    except IsADirectoryError as e:
        raise fail("it is a folder", "give an image file") from e
    except PermissionError as e:
        raise fail("permission denied", "make the file readable") from e
    except Image.DecompressionBombError as e:
        raise fail(f"image is too large ({_one_line(e)})", "give a smaller image") from e
    except UnidentifiedImageError as e:
        empty = path.is_file() and path.stat().st_size == 0
        raise fail("file is empty" if empty else "not an image file Pillow can read") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # Pillow's own convert() clips 16-bit values at 255; scale 0..65535 to 0..255 instead.
        # "I" (32-bit int) is how 16-bit PNGs are read by many Pillow versions, so same scale.
        a = np.asarray(img).astype(np.float64)
        a = np.clip(a, 0, 65535) / 257.0
        return Image.fromarray(np.round(a).astype(np.uint8)).convert("RGB")
    if mode == "F":
        # Float images are 0..1 by convention unless their values say 0..255.
        a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.round(np.clip(a, 0, 255)).astype(np.uint8)).convert("RGB")
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except ValueError as e:  # e.g. LAB: Pillow has no direct conversion
        path = getattr(img, "filename", "") or "image"
        raise UserError(
            _one_line(
                f"cannot read image '{path}': colour mode {mode} is not supported; "
                "save it as an RGB JPEG or PNG"
            )
        ) from e


def fit_long_side(img: Image.Image, long_side: int) -> Image.Image:
    """Scale so the longer side is `long_side` pixels (up or down), keeping the aspect ratio."""
    if long_side < 1:
        raise UserError(
            f"image size must be at least 1 pixel, got {long_side}; set a positive size"
        )
    size = fitted_size(img.size, long_side)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS)


def fitted_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) that `fit_long_side` gives an image of `size`, without resizing it."""
    w, h = size
    scale = long_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def read_mask(path: Path | str, like: Image.Image, key: str) -> Image.Image:
    """A mask drawn over the content image `like` (same pixel size), as 8-bit grey;
    `key` names the config entry in the error when the sizes differ."""
    mask = read_rgb(path).convert("L")
    if mask.size != like.size:
        raise UserError(
            f"{key}: mask '{path}' is {mask.size[0]}x{mask.size[1]} but the content image is "
            f"{like.size[0]}x{like.size[1]}; draw the mask at the content image's size"
        )
    if mask.getextrema()[1] == 0:
        raise UserError(f"{key}: mask '{path}' is all black, so its style would go nowhere; "
                        "paint white where the style goes")
    return mask


def to_array(img: Image.Image) -> np.ndarray:
    """float32 (H, W, 3) with values 0..255, the range the VGG preprocessing expects."""
    return np.asarray(_to_rgb(img), dtype=np.float32)


def to_pixels(array: np.ndarray) -> np.ndarray:
    """An (H, W, 3) 0..255 array (a leading batch of 1 is dropped) as 8-bit pixels."""
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {a.shape}")
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    return np.round(np.clip(a, 0, 255)).astype(np.uint8)


def save_png(path: Path | str, array: np.ndarray) -> None:
    """Write an (H, W, 3) 0..255 array (a leading batch of 1 is dropped) as an 8-bit PNG.

    Written to a temp file in the same folder and moved into place, so an interrupted run
    never leaves a half-written PNG where a finished one is expected.
    """
    path = Path(path)
    pixels = to_pixels(array)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(path.parent, e.strerror or str(e)) from e
    with open_atomic(path) as f:
        Image.fromarray(pixels).save(f, format="PNG")
