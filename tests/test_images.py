"""Tests for nst_tf.images: real small files in tmp_path and a local HTTP server, no internet."""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_tf.errors import UserError
from nst_tf.images import fit_long_side, read_rgb, resolve_image, save_png, to_array
from tests.helpers import SHARED_IMAGES

UNREACHABLE = "http://127.0.0.1:9/x.jpg"  # discard port: connection refused at once


@dataclass
class Src:
    """Stands in for a config's content/style node."""

    name: str | None = None
    path: str | None = None
    file: str | None = None
    url: str | None = None
    md5: str | None = None


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def assert_one_line_error(exc: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    for part in parts:
        assert part in message, (part, message)
    return message


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return tuple(int(v) for v in img.getpixel(xy))


def close_to(got: tuple[int, ...], want: tuple[int, ...], tol: int) -> bool:
    return all(abs(g - w) <= tol for g, w in zip(got, want, strict=True))


def stored_mode(path: Path) -> str:
    """The mode Pillow reads the file as, to prove a test really exercises that conversion."""
    with Image.open(path) as img:
        return img.mode


def jpeg_bytes(size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    # Noise so the JPEG has plenty of entropy-coded data to cut in half.
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# --- conversions -------------------------------------------------------------------------------


def test_grayscale_l_becomes_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (3, 2), 77).save(path)
    img = read_rgb(path)
    assert img.mode == "RGB" and img.size == (3, 2)
    assert pixel(img, (2, 1)) == (77, 77, 77)


def test_la_composites_on_white(tmp_path):
    path = tmp_path / "la.png"
    img = Image.new("LA", (3, 1))
    img.putpixel((0, 0), (100, 255))  # opaque
    img.putpixel((1, 0), (100, 0))  # fully transparent -> white
    img.putpixel((2, 0), (0, 128))  # half transparent black -> mid gray
    img.save(path)
    out = read_rgb(path)
    assert out.mode == "RGB"
    assert pixel(out, (0, 0)) == (100, 100, 100)
    assert pixel(out, (1, 0)) == (255, 255, 255)
    assert close_to(pixel(out, (2, 0)), (127, 127, 127), 1)


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "p.png"
    img = Image.new("P", (2, 1), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putpixel((1, 0), 1)
    img.save(path, transparency=1)  # index 1 (blue) is transparent
    assert stored_mode(path) == "P"
    out = read_rgb(path)
    assert out.mode == "RGB"
    assert pixel(out, (0, 0)) == (255, 0, 0)
    assert pixel(out, (1, 0)) == (255, 255, 255)


def test_rgba_composites_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (0, 0, 255, 255))
    img.putpixel((1, 0), (255, 0, 0, 0))
    img.putpixel((2, 0), (0, 0, 0, 128))
    img.save(path)
    out = read_rgb(path)
    assert pixel(out, (0, 0)) == (0, 0, 255)
    assert pixel(out, (1, 0)) == (255, 255, 255)
    assert close_to(pixel(out, (2, 0)), (127, 127, 127), 1)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # red in CMYK
    assert stored_mode(path) == "CMYK"
    out = read_rgb(path)
    assert out.mode == "RGB"
    assert close_to(pixel(out, (8, 8)), (255, 0, 0), 8)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 65535, 32896, 257 * 100]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert stored_mode(path) in ("I;16", "I")  # really a 16-bit file
    out = read_rgb(path)
    assert out.mode == "RGB"
    assert [pixel(out, (x, 0))[0] for x in range(4)] == [0, 255, 128, 100]
    assert pixel(out, (3, 0)) == (100, 100, 100)


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<i4"])
def test_16bit_modes_in_memory(dtype):
    # I;16 (little), I;16B (big-endian) and I (32-bit int) all hold 0..65535 values.
    img = Image.fromarray(np.array([[0, 65535, 257 * 40]], dtype=dtype))
    assert img.mode in ("I;16", "I;16B", "I")
    arr = to_array(img)
    assert arr[0, :, 0].tolist() == [0.0, 255.0, 40.0]


def test_float_image_0_to_1(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.array([[0.0, 1.0, 0.5]], dtype=np.float32)).save(path)
    assert stored_mode(path) == "F"
    out = read_rgb(path)
    assert [pixel(out, (x, 0)) for x in range(3)] == [(0, 0, 0), (255, 255, 255), (128, 128, 128)]


def test_float_image_0_to_255_is_clipped():
    img = Image.fromarray(np.array([[-3.0, 10.0, 200.4, 300.0]], dtype=np.float32))
    assert to_array(img)[0, :, 1].tolist() == [0.0, 10.0, 200.0, 255.0]


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_comes_back_upright(tmp_path, orientation):
    path = tmp_path / "rotated.jpg"
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=95)
    out = read_rgb(path)
    assert out.size == (20, 40)
    # 6: turn 90 degrees clockwise, so the stored left (red) ends up on top; 8: the other way.
    top, bottom = pixel(out, (10, 5)), pixel(out, (10, 35))
    red, blue = (255, 0, 0), (0, 0, 255)
    assert close_to(top, red if orientation == 6 else blue, 30)
    assert close_to(bottom, blue if orientation == 6 else red, 30)


# --- bad files ----------------------------------------------------------------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.jpg"


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    return path


def _truncated(tmp_path: Path) -> Path:
    data = jpeg_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\nsecond line\n")
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_missing, "no such file"),
        (_empty, "empty"),
        (_truncated, "truncated"),
        (_text, "not an image"),
    ],
)
def test_bad_files_raise_one_line_user_error(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(UserError) as exc:
        read_rgb(path)
    assert_one_line_error(exc, str(path), problem)


def test_truncated_file_really_opens_lazily(tmp_path):
    # Guards the test above: Image.open alone accepts half a JPEG, only decoding catches it.
    path = _truncated(tmp_path)
    with Image.open(path) as img:
        assert img.size == (64, 64)


# --- resolve_image ------------------------------------------------------------------------------


def cache_files(cache: Path) -> list[str]:
    folder = cache / "images"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_user_path_wins(tmp_path):
    mine = tmp_path / "mine.jpg"
    mine.write_bytes(b"user image")
    images = tmp_path / "images"
    images.mkdir()
    (images / "starry_night.jpg").write_bytes(b"local copy")
    src = Src(name="starry", path=str(mine), file="starry_night.jpg", url=UNREACHABLE)
    assert resolve_image(src, "style", images, tmp_path / "cache") == mine


def test_missing_user_path_names_the_key(tmp_path):
    src = Src(path=str(tmp_path / "gone.jpg"), file="starry_night.jpg")
    with pytest.raises(UserError) as exc:
        resolve_image(src, "content", None, tmp_path / "cache")
    assert_one_line_error(exc, "gone.jpg", "content.path")


def test_found_in_local_images_folder_by_name_without_md5_check(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    local = images / "starry_night.jpg"
    local.write_bytes(b"a resized copy")
    src = Src(name="starry", file="starry_night.jpg", url=UNREACHABLE, md5="0" * 32)
    assert resolve_image(src, "style", images, tmp_path / "cache") == local


def test_found_in_cache_with_md5(tmp_path):
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    data = b"cached original"
    (cache / "images" / "tubingen.jpg").write_bytes(data)
    src = Src(name="tubingen", file="tubingen.jpg", url=UNREACHABLE, md5=md5_of(data))
    assert resolve_image(src, "content", tmp_path / "empty", cache) == cache / "images/tubingen.jpg"


def test_download_checks_md5_then_caches(tmp_path, server):
    data = jpeg_bytes(seed=1)
    (server.root / "tubingen.jpg").write_bytes(data)
    cache = tmp_path / "cache"
    src = Src(
        name="tubingen", file="tubingen.jpg", url=f"{server.url}/tubingen.jpg", md5=md5_of(data)
    )

    first = resolve_image(src, "content", None, cache)
    assert first == cache / "images" / "tubingen.jpg"
    assert first.read_bytes() == data
    assert server.hits == ["/tubingen.jpg"]
    assert cache_files(cache) == ["tubingen.jpg"]  # no temp file left behind
    assert read_rgb(first).size == (64, 64)

    second = resolve_image(src, "content", None, cache)
    assert second == first
    assert server.hits == ["/tubingen.jpg"]  # served from the cache


def test_cached_copy_with_wrong_md5_is_downloaded_again(tmp_path, server):
    data = b"the real thing"
    (server.root / "a.jpg").write_bytes(data)
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    (cache / "images" / "a.jpg").write_bytes(b"half a downl")
    src = Src(name="a", file="a.jpg", url=f"{server.url}/a.jpg", md5=md5_of(data))
    assert resolve_image(src, "style", None, cache).read_bytes() == data
    assert len(server.hits) == 1


def test_md5_mismatch_is_an_error_and_nothing_is_kept(tmp_path, server):
    (server.root / "starry_night.jpg").write_bytes(b"some other file")
    cache = tmp_path / "cache"
    src = Src(
        name="starry",
        file="starry_night.jpg",
        url=f"{server.url}/starry_night.jpg",
        md5=md5_of(b"the original"),
    )
    with pytest.raises(UserError) as exc:
        resolve_image(src, "style", None, cache)
    assert_one_line_error(exc, "md5", md5_of(b"the original"), "style.path")
    assert server.hits == ["/starry_night.jpg"]
    assert cache_files(cache) == []


def test_http_error_is_reported(tmp_path, server):
    src = Src(name="starry", file="starry_night.jpg", url=f"{server.url}/missing.jpg")
    with pytest.raises(UserError) as exc:
        resolve_image(src, "style", None, tmp_path / "cache")
    assert_one_line_error(exc, "404", f"{server.url}/missing.jpg")
    assert cache_files(tmp_path / "cache") == []


def test_unreachable_url_without_local_copy(tmp_path):
    src = Src(name="starry", file="starry_night.jpg", url=UNREACHABLE, md5="0" * 32)
    with pytest.raises(UserError) as exc:
        resolve_image(src, "style", tmp_path / "no-images", tmp_path / "cache")
    assert_one_line_error(
        exc,
        "style image 'starry' (starry_night.jpg) not found",
        "paths.images",
        UNREACHABLE,
        "failed",
        "paths.images=/folder/with/starry_night.jpg",
        "style.path=/your/image.jpg",
    )
    assert cache_files(tmp_path / "cache") == []


def test_no_url_and_no_local_copy(tmp_path):
    src = Src(name="shipwreck", file="shipwreck.jpg", url=None)
    with pytest.raises(UserError) as exc:
        resolve_image(src, "style", None, tmp_path / "cache")
    assert_one_line_error(exc, "shipwreck.jpg", "no download URL", "style.path")


def test_nothing_given(tmp_path):
    with pytest.raises(UserError) as exc:
        resolve_image(Src(), "content", None, tmp_path / "cache")
    assert_one_line_error(exc, "content.path")


# --- the real paper images (skipped where ../shared/images is absent) --------------------------

# They check the real files' md5s and sizes; all other tests run on synthetic stand-ins too.
needs_shared = pytest.mark.skipif(
    not SHARED_IMAGES.is_dir(), reason=f"checks the paper's real images, not in {SHARED_IMAGES}"
)


def readme_md5(file: str) -> str:
    for line in (SHARED_IMAGES / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1] == file:
            return cells[2]
    raise AssertionError(f"{file} not in the README table")


@needs_shared
def test_real_tubingen():
    path = SHARED_IMAGES / "tubingen.jpg"
    assert hashlib.md5(path.read_bytes()).hexdigest() == readme_md5("tubingen.jpg")
    img = read_rgb(path)
    assert img.mode == "RGB" and img.size == (1024, 768)


@needs_shared
def test_real_folder_found_by_name(tmp_path):
    src = Src(name="shipwreck", file="shipwreck.jpg", url=None)
    path = resolve_image(src, "style", SHARED_IMAGES, tmp_path / "cache")
    assert path == SHARED_IMAGES / "shipwreck.jpg"
    assert read_rgb(path).size == (960, 662)


# --- fit_long_side, to_array, save_png ----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [((40, 20), 10, (10, 5)), ((20, 40), 100, (50, 100)), ((1000, 1), 10, (10, 1))],
)
def test_fit_long_side(size, long_side, expected):
    assert fit_long_side(Image.new("RGB", size), long_side).size == expected


def test_fit_long_side_rejects_zero():
    with pytest.raises(UserError):
        fit_long_side(Image.new("RGB", (4, 4)), 0)


def test_to_array_shape_and_range():
    arr = to_array(Image.new("RGB", (5, 3), (1, 2, 255)))
    assert arr.dtype == np.float32 and arr.shape == (3, 5, 3)
    assert arr[2, 4].tolist() == [1.0, 2.0, 255.0]


def test_save_png_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    array = rng.uniform(-20, 280, (6, 7, 3)).astype(np.float32)  # some values out of range
    path = tmp_path / "out" / "nested" / "result.png"
    save_png(path, array)
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.png"]  # no temp file left
    back = to_array(read_rgb(path))
    assert back.shape == (6, 7, 3)
    assert np.abs(back - np.clip(array, 0, 255)).max() <= 0.5
    assert back.min() == 0.0 and back.max() == 255.0


def test_save_png_replaces_existing_file(tmp_path):
    path = tmp_path / "result.png"
    save_png(path, np.zeros((2, 2, 3)))
    save_png(path, np.full((1, 2, 2, 3), 200.0))  # a batch of one, as a model returns it
    assert to_array(read_rgb(path)).tolist() == np.full((2, 2, 3), 200.0).tolist()
