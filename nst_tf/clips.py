"""Clips in and out: a video, a GIF or a folder/glob of frames, read a frame at a time as RGB
arrays; stylised frames written back as an H.264 mp4. Videos go through imageio-ffmpeg's ffmpeg
(imported only then, so frame folders work without it); GIFs and frame files through Pillow."""

import os
import re
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from nst_tf.errors import UserError, WriteError, warn
from nst_tf.files import discard, short_reason
from nst_tf.images import IMAGE_SUFFIXES, _one_line, _to_rgb, images_in, read_rgb

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")
DEFAULT_FPS = 24.0  # a folder of frames carries no rate; film's is the usual guess
CRF = 18  # x264's "visually lossless" end (its default, 23, shows blocks in flat paint)


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height), as Pillow gives sizes
    # The frame count the file states (a video's duration x rate); None where nothing states
    # one (frame folders, GIFs). `frames` is how many can be read: fewer if it is cut off.
    stated_frames: int | None = None


@dataclass
class Clip:
    """Frames decoded on demand, never the whole clip at once. Reading forward is cheap; a video
    frame before the last one read restarts ffmpeg and decodes up to it (exact, where ffmpeg's
    seek is by time). Close it, or use `with`: a video holds an ffmpeg process open."""

    info: ClipInfo
    read: Callable[[int], np.ndarray]
    close: Callable[[], None] = lambda: None

    def frame(self, i: int) -> np.ndarray:
        """Frame `i` as an (H, W, 3) uint8 RGB array."""
        if not 0 <= i < self.info.frames:
            raise IndexError(f"frame {i} is outside the clip's {self.info.frames} frames")
        return self.read(i)

    def __len__(self) -> int:
        return self.info.frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(self.info.frames))

    def __enter__(self) -> "Clip":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def is_clip(path: str | Path) -> bool:
    path = Path(path).expanduser()
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def frame_name(i: int) -> str:
    return f"{i:05d}.png"


def open_clip(path: str | Path, fps: float | None = None, allow_short: bool = False) -> Clip:
    """A video file, a GIF, or a folder or glob of frames (e.g. 'shot/*.png'): those frames in
    natural name order (frame_2 before frame_10) at `fps`, 24 when not given. A video or GIF
    keeps its own rate (a GIF's: its mean frame duration); `fps` only stands in when unknown.
    A video whose frames run out before its stated length is refused, or with `allow_short`
    read as far as it goes, with a warning."""
    spec, where = str(path), Path(path).expanduser()
    if where.is_dir() or (not where.exists() and any(c in spec for c in "*?[")):
        return _open_frames(spec, where, fps or DEFAULT_FPS)
    if not where.exists():
        raise UserError(_one_line(f"clip '{spec}' not found; give a video file, a folder of "
                                  "frames or a glob such as 'frames/*.png'"))
    if not where.is_file() or where.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(_one_line(f"'{spec}' is not a clip; give a video file "
                                  f"({', '.join(VIDEO_SUFFIXES)}), a folder of frames or a glob"))
    if where.suffix.lower() == ".gif":
        return _open_gif(where, fps)
    return _open_video(where, fps, allow_short)


def _open_frames(spec: str, where: Path, fps: float) -> Clip:
    # Hidden names skipped: macOS leaves "._frame_0001.png" metadata files on shared drives.
    files = sorted((p for p in images_in(where) if not p.name.startswith(".")),
                   key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))])
    if not files:
        raise UserError(_one_line(f"clip '{spec}' names no frames ({', '.join(IMAGE_SUFFIXES)});"
                                  " give a folder or glob that has some, or a video file"))
    size = read_rgb(files[0]).size  # as every frame will be read: EXIF orientation applied

    def check(file: Path, got: tuple[int, int], want: tuple[int, int] = size) -> None:
        if got != want:
            raise UserError(_one_line(
                f"frame '{file}' is {got[0]}x{got[1]} but the clip's first frame "
                f"'{files[0].name}' is {want[0]}x{want[1]}; give frames of one size"))

    first = _header_size(files[0])
    for file in files[1:]:  # headers only: a wrong frame fails now, not hours into a run
        check(file, _header_size(file), first)

    def read(i: int) -> np.ndarray:
        image = read_rgb(files[i])
        check(files[i], image.size)
        return np.array(image)

    return Clip(ClipInfo(where, len(files), float(fps), size), read)


def _header_size(file: Path) -> tuple[int, int]:
    try:
        with Image.open(file) as img:
            return img.size
    except Exception:  # read it all, for read_rgb's one-line error naming the file
        return read_rgb(file).size


def _open_gif(path: Path, fps: float | None) -> Clip:
    def fail(problem: str) -> UserError:
        return UserError(_one_line(f"cannot read GIF '{path}': {problem}; give a complete GIF"))

    try:
        with Image.open(path) as image:
            durations = []
            for k in range(getattr(image, "n_frames", 1)):
                image.seek(k)
                durations.append(image.info.get("duration") or 0)
        image = Image.open(path)  # kept open: Pillow seeks forward cheaply, back by rewinding
    except Exception as e:
        raise fail(short_reason(e)) from e
    # Browsers show delays of 0 or 10 ms as 100 ms: the timing a GIF was made to look right at.
    rate = 1000 * len(durations) / sum(d if d > 10 else 100 for d in durations)

    def read(i: int) -> np.ndarray:
        try:
            image.seek(i)
            return np.array(_to_rgb(image))
        except (OSError, EOFError, ValueError) as e:
            raise fail(f"frame {i} is damaged ({short_reason(e)})") from e

    no_delays = fps and not any(durations)
    return Clip(ClipInfo(path, len(durations), float(fps if no_delays else rate), image.size),
                read, image.close)


def _ffmpeg(doing: str) -> ModuleType:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()  # its bundled binary, or the system's
    except (ImportError, RuntimeError) as e:
        raise UserError(f"{doing} video needs imageio and imageio-ffmpeg; "
                        "pip install 'nst-tf[video]'") from e
    return imageio_ffmpeg


def _ffmpeg_reason(text: str) -> str:
    # In these cases ffmpeg's last line speaks of its own arguments or output, not the file.
    for key, says in (("matches no streams", "it has no video stream"),
                      ("received no packets", "no frame of it can be decoded")):
        if key in text:
            return says
    # Else its last words, without "[mp4 @ 0x5f..]" prefixes, progress or "Conversion failed!"
    lines = [re.sub(r"^(\[[^]]*\] *)+", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("===", "Conversion", "frame="))]
    return lines[-1] if lines else ""


def _open_video(path: Path, fps: float | None, allow_short: bool) -> Clip:
    ff = _ffmpeg("reading")
    # ffmpeg's frame generator, the index of its next frame, the last frame it gave
    decoder: list = [None, 0, None]

    def close() -> None:
        if decoder[0] is not None:
            decoder[0].close()  # ends the ffmpeg process
        decoder[:] = [None, 0, None]

    def restart() -> dict:
        close()
        decoder[0] = ff.read_frames(str(path), pix_fmt="rgb24")
        return next(decoder[0])

    def fail(problem: str) -> UserError:
        close()
        return UserError(_one_line(f"cannot read video '{path}': {problem}; give a video ffmpeg "
                                   "can decode (mp4, mov, webm, mkv, avi) or re-encode it"))

    try:
        # A decoding pass: the header's duration x rate is an estimate, often off by one.
        count, _ = ff.count_frames_and_secs(str(path))
        meta = restart()
    except (RuntimeError, OSError, IndexError) as e:
        raise fail(_ffmpeg_reason(str(e)) or "ffmpeg cannot decode it") from e
    # ffmpeg prints rates to 2 decimals: 29.97 stands for 30000/1001, which a rewrite must keep.
    rate = next((r for r in (24e3 / 1001, 30e3 / 1001, 60e3 / 1001)
                 if abs(meta["fps"] - r) < 6e-3), meta["fps"]) or fps
    if not count or not rate:
        raise fail("it has no frames" if not count else "its frame rate is unknown (give fps)")
    stated = round(meta["duration"] * rate) if meta.get("duration") else None
    if stated and count < stated - 1:  # one off is the estimate's error, not a cut
        cut = (f"video '{path}' is cut off: decoding stops at frame {count} (counting from 0) "
               f"but it states {stated} frames ({meta['duration']:.2f} s at {rate:.4g} fps)")
        if not allow_short:
            close()
            raise UserError(_one_line(f"{cut}; give the whole file, or stylise the {count} "
                                      "frames that can be read with video.allow_short=true"))
        warn(f"{cut}; stylising the {count} frames that can be read (video.allow_short)")
    width, height = meta["size"]

    def read(i: int) -> np.ndarray:
        if i == decoder[1] - 1:  # asked again (the first frame is, to set a run up)
            return decoder[2].copy()
        try:
            if decoder[0] is None or i < decoder[1]:
                restart()
            while decoder[1] <= i:
                data = next(decoder[0])
                decoder[1] += 1
        except (StopIteration, RuntimeError, OSError, IndexError) as e:
            why = _ffmpeg_reason(str(e)) or f"it ends there, not after {count} frames"
            raise fail(f"frame {decoder[1]} cannot be decoded ({why})") from e
        decoder[2] = np.frombuffer(data, np.uint8).reshape(height, width, 3)
        return decoder[2].copy()

    return Clip(ClipInfo(path, count, float(rate), (width, height), stated), read, close)


def write_video(frames: Iterable[np.ndarray | str | Path], path: str | Path, fps: float) -> None:
    """Write (H, W, 3) RGB frames (0..255 arrays, or image files such as frames/00000.png) as an
    H.264 mp4 (yuv420p, CRF 18) that plays at exactly `fps`; odd sides get one edge pixel more.
    Written to a hidden temp file and moved into place, so a failed or interrupted write leaves
    any earlier `path` as it was. A file that cannot be written raises WriteError."""
    path = Path(path)
    if not 0 < fps < float("inf"):
        raise UserError(f"video frame rate must be positive, got {fps}; fix fps")
    exe = _ffmpeg("writing").get_ffmpeg_exe()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(path.parent, e.strerror or short_reason(e)) from e
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    process = size = None
    try:
        open(tmp, "xb").close()  # fails here with the OS's reason, before any encoding
        with tempfile.TemporaryFile() as log:
            for k, frame in enumerate(frames):
                a = _frame_array(frame)
                if size is None:
                    size = a.shape[1::-1]
                    # Own session: a Ctrl-C in the terminal is for us to act on, not ffmpeg.
                    process = subprocess.Popen(_encoder(exe, size, fps, tmp), stdin=subprocess.PIPE,
                                               stdout=subprocess.DEVNULL, stderr=log,
                                               start_new_session=True)
                elif a.shape[1::-1] != size:
                    what = f"frame {k}" + (f" ('{frame}')" if isinstance(frame, str | Path) else "")
                    raise UserError(_one_line(f"{what} is {a.shape[1]}x{a.shape[0]} but frame 0 is "
                                              f"{size[0]}x{size[1]}; give frames of one size"))
                # yuv420p stores colour at half resolution, so needs even sides: pad one edge
                # pixel rather than rescale, which would blur every frame.
                a = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2), (0, 0)), mode="edge")
                try:
                    process.stdin.write(a.tobytes())
                except BrokenPipeError:
                    break  # ffmpeg has ended; its exit status and log say why
            if process is None:
                raise ValueError("write_video got no frames")
            with suppress(BrokenPipeError):
                process.stdin.close()
            if (code := process.wait()) != 0:  # < 0: a signal, e.g. SIGXFSZ (a file-size limit)
                log.seek(0)
                said = _ffmpeg_reason(log.read().decode(errors="replace"))
                killed = code < 0 and f"killed by {signal.Signals(-code).name}"
                raise WriteError(path, f"ffmpeg: {said or killed or f'exit status {code}'}")
        os.replace(tmp, path)
    except OSError as e:  # not ffmpeg's: making the temp file, or moving it into place
        raise WriteError(path, e.strerror or short_reason(e)) from e
    finally:
        if process is not None and process.poll() is None:  # e.g. a stop signal mid-write
            process.kill()
            process.wait()
        discard(tmp)


def _frame_array(frame: np.ndarray | str | Path) -> np.ndarray:
    a = np.asarray(read_rgb(frame) if isinstance(frame, str | Path) else frame)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"write_video expects (H, W, 3) frames, got shape {a.shape}")
    return a if a.dtype == np.uint8 else np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def _encoder(exe: str, size: tuple[int, int], fps: float, out: Path) -> list[str]:
    w, h = size[0] + size[0] % 2, size[1] + size[1] % 2
    rate = Fraction(fps).limit_denominator(100_000)  # a ratio: 30000/1001 stays exact
    return [exe, "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-r", str(rate), "-i", "-", "-an", "-c:v", "libx264", "-crf", str(CRF),
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(out)]
