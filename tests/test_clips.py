"""nst_tf.clips: videos, GIFs and frame folders in; H.264 mp4s out, written atomically. Real
files in tmp_path, the bundled ffmpeg; the Tübingen test clip (tests/clips.py)."""

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nst_tf.clips
from nst_tf.clips import frame_name, is_clip, open_clip, write_video
from nst_tf.errors import UserError, WriteError
from tests.clips import make_clip, write_frames


@pytest.fixture(scope="module")
def clip(images_dir):
    return make_clip(images_dir / "tubingen.jpg", frames=12, size=(96, 72))


def one_line(error: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)
    return message


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("fps", [12.5, 15])
def test_an_mp4_reads_back_its_frames_rate_and_size(clip, tmp_path, fps):
    path = tmp_path / "result.mp4"
    write_video(clip.frames, path, fps)
    with open_clip(path, fps=30) as made:  # a video keeps its own rate
        assert (made.info.frames, made.info.fps, made.info.size) == (12, fps, (96, 72))
        frames = list(made)
        assert len(frames) == 12 and frames[0].shape == (72, 96, 3) and frames[0].dtype == np.uint8
        for got, want in zip(frames, clip.frames, strict=True):
            assert mean_error(got, want) < 8  # H.264 is lossy, and yuv420p halves colour
        # Going back restarts the decoder at frame 0 and must land on the same frame; asking
        # again gives the frame kept from that read.
        assert np.array_equal(made.frame(3), frames[3]) and np.array_equal(made.frame(3), frames[3])
        assert np.array_equal(made.frame(11), frames[11])
        with pytest.raises(IndexError):
            made.frame(12)
    assert leftovers(tmp_path) == []  # the temp file was moved into place


def test_stylised_png_frames_write_and_an_ntsc_rate_stays_exact(clip, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    paths = [frames / frame_name(i) for i in range(4)]
    for path, pixels in zip(paths, clip.frames, strict=False):
        Image.fromarray(pixels).save(path)
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    write_video(paths, tmp_path / "result.mp4", 30000 / 1001)
    made = open_clip(tmp_path / "result.mp4")
    # ffmpeg reports 29.97; a rewrite at that would drift from the source over a long clip.
    assert made.info.fps == 30000 / 1001 and made.info.frames == 4
    assert Fraction(made.info.fps).limit_denominator(100_000) == Fraction(30000, 1001)
    assert mean_error(made.frame(2), clip.frames[2]) < 8
    made.close()
    # ffmpeg prints rates to 2 decimals, so only the encoder's arguments can show 40/3 is exact.
    assert "40/3" in nst_tf.clips._encoder("ffmpeg", (96, 72), 40 / 3, tmp_path / "x.mp4")


def test_a_video_decodes_forward_and_restarts_only_to_go_back(clip, tmp_path, monkeypatch):
    import imageio_ffmpeg

    write_video(clip.frames[:5], tmp_path / "a.mp4", 10)
    starts, real = [], imageio_ffmpeg.read_frames

    def counted(*args, **kwargs):
        starts.append(1)  # one ffmpeg process each
        return real(*args, **kwargs)

    monkeypatch.setattr(imageio_ffmpeg, "read_frames", counted)
    with open_clip(tmp_path / "a.mp4") as made:
        first = made.frame(0)
        assert np.array_equal(made.frame(0), first) and len(starts) == 1  # asked again: kept
        made.frame(4)
        assert len(starts) == 1
        assert np.array_equal(made.frame(1), list(made)[1]) and len(starts) == 3


def test_an_odd_sized_clip_is_padded_by_its_edge_pixels_not_rescaled(images_dir, tmp_path):
    odd = make_clip(images_dir / "tubingen.jpg", frames=3, size=(95, 71))
    write_video(odd.frames, tmp_path / "odd.mp4", 10)
    with open_clip(tmp_path / "odd.mp4") as made:
        assert made.info.size == (96, 72)
        frame = made.frame(1)
    assert mean_error(frame[:71, :95], odd.frames[1]) < 8  # no rescale: pixels line up
    # The added column and row repeat the last ones (not black, not a stretched picture).
    assert mean_error(frame[:71, 95], odd.frames[1][:, 94]) < 12
    assert mean_error(frame[71, :95], odd.frames[1][70, :]) < 12
    assert frame[:, 95].mean() > 40


def test_a_gif_plays_at_its_frame_durations(clip, tmp_path):
    images = [Image.fromarray(f) for f in clip.frames]
    images[0].save(tmp_path / "pan.gif", save_all=True, append_images=images[1:], duration=80,
                   loop=0)
    with open_clip(tmp_path / "pan.gif", fps=30) as made:  # a GIF keeps its own rate
        assert (made.info.frames, made.info.fps, made.info.size) == (12, 12.5, (96, 72))
        frames = list(made)
    assert all(f.shape == (72, 96, 3) and f.dtype == np.uint8 for f in frames)
    for got, want in zip(frames, clip.frames, strict=True):
        assert mean_error(got, want) < 8  # a 256-colour palette per frame
    # Later frames really differ (the occluder moves): not frame 0 again and again.
    assert mean_error(frames[11], frames[0]) > 10


def test_a_gif_without_delays_plays_as_browsers_show_it_unless_fps_is_given(tmp_path):
    images = [Image.new("RGB", (8, 6), (40 * i, 0, 0)) for i in range(3)]
    images[0].save(tmp_path / "fast.gif", save_all=True, append_images=images[1:], duration=0)
    assert open_clip(tmp_path / "fast.gif").info.fps == 10
    assert open_clip(tmp_path / "fast.gif", fps=5).info.fps == 5


def test_a_folder_and_a_glob_of_frames_read_in_natural_order(clip, tmp_path):
    folder = tmp_path / "shot"
    folder.mkdir()
    for i, pixels in enumerate(clip.frames):  # unpadded: a plain sort puts f_10 before f_2
        Image.fromarray(pixels).save(folder / f"f_{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    (folder / "._f_1.png").write_bytes(b"macOS metadata, not a picture")
    with open_clip(folder) as made:
        assert (made.info.frames, made.info.fps, made.info.size) == (12, 24.0, (96, 72))
        assert all(np.array_equal(a, b) for a, b in zip(made, clip.frames, strict=True))
    Image.fromarray(clip.frames[0]).save(folder / "other_0.png")  # outside the glob
    made = open_clip(str(folder / "f_*.png"), fps=12.5)
    assert (made.info.frames, made.info.fps) == (12, 12.5)
    assert np.array_equal(made.frame(10), clip.frames[10])
    assert np.array_equal(made.frame(2), clip.frames[2])


def test_the_shared_frame_writer_makes_a_readable_folder(clip, tmp_path):
    write_frames(clip, tmp_path / "frames")
    made = open_clip(tmp_path / "frames", fps=10)
    assert (made.info.frames, made.info.fps) == (12, 10.0)
    assert np.array_equal(made.frame(7), clip.frames[7])


def test_a_frame_of_another_size_is_named_at_open(clip, tmp_path):
    paths = write_frames(clip, tmp_path / "frames")
    Image.fromarray(clip.frames[5]).resize((80, 60)).save(paths[5])
    with pytest.raises(UserError) as error:
        open_clip(tmp_path / "frames")
    one_line(error, "frame_0005.png", "80x60", "96x72", "give frames of one size")
    # A frame replaced while a run goes on is caught when it is read.
    Image.fromarray(clip.frames[5]).save(paths[5])
    made = open_clip(tmp_path / "frames")
    Image.fromarray(clip.frames[8]).resize((80, 60)).save(paths[8])
    with pytest.raises(UserError) as error:
        made.frame(8)
    one_line(error, "frame_0008.png", "80x60", "96x72")


def test_an_unreadable_frame_is_named(clip, tmp_path):
    paths = write_frames(clip, tmp_path / "frames")
    paths[3].write_bytes(b"this is not a PNG")
    with pytest.raises(UserError) as error:
        open_clip(tmp_path / "frames")  # its header already fails
    one_line(error, "frame_0003.png")
    # A cut-off PNG has a good header: it fails when its frame is read, and is named then.
    data = Image.fromarray(clip.frames[3])
    data.save(paths[3])
    paths[3].write_bytes(paths[3].read_bytes()[:400])
    made = open_clip(tmp_path / "frames")
    assert made.frame(2).shape == (72, 96, 3)
    with pytest.raises(UserError) as error:
        made.frame(3)
    one_line(error, "frame_0003.png", "truncated")


@pytest.mark.parametrize("name", ["empty", "missing", "glob", "text"])
def test_no_clip_there_is_one_line(tmp_path, name):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no frames here")
    (tmp_path / "notes.txt").write_text("hello")
    spec = {"empty": tmp_path / "empty", "missing": tmp_path / "gone.mp4",
            "glob": str(tmp_path / "empty" / "*.png"), "text": tmp_path / "notes.txt"}[name]
    with pytest.raises(UserError) as error:
        open_clip(spec)
    one_line(error, str(spec))


def test_a_damaged_video_is_one_line_naming_it(clip, tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all " * 50)
    with pytest.raises(UserError) as error:
        open_clip(tmp_path / "junk.mp4")
    one_line(error, "junk.mp4", "re-encode")
    write_video(clip.frames, tmp_path / "whole.mp4", 12)
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError) as error:
        open_clip(tmp_path / "cut.mp4")
    one_line(error, "cut.mp4")


def test_a_clip_cut_off_before_its_stated_length_is_refused_unless_asked(clip, tmp_path,
                                                                        capsys):
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    write_video(clip.frames, whole, 12)  # +faststart: the index, and the length, come first
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(UserError) as error:
        open_clip(cut)
    message = one_line(error, f"video '{cut}' is cut off", "it states 12 frames (1.00 s at 12 fps)",
                       "video.allow_short=true")
    stops = int(message.split("decoding stops at frame ")[1].split()[0])
    assert 0 < stops < 12
    with open_clip(cut, allow_short=True) as made:
        assert (made.info.frames, made.info.stated_frames) == (stops, 12)
        frames = list(made)
    assert len(frames) == stops and mean_error(frames[-1], clip.frames[stops - 1]) < 8
    assert f"stylising the {stops} frames that can be read" in capsys.readouterr().err
    with open_clip(whole) as made:  # a whole clip: all it states
        assert made.info.frames == made.info.stated_frames == 12


def test_is_clip_and_frame_name(tmp_path):
    (tmp_path / "a.MP4").write_bytes(b"")
    (tmp_path / "b.gif").write_bytes(b"")
    (tmp_path / "c.png").write_bytes(b"")
    (tmp_path / "d.mov").mkdir()
    assert is_clip(tmp_path / "a.MP4") and is_clip(str(tmp_path / "b.gif"))
    assert not is_clip(tmp_path / "c.png") and not is_clip(tmp_path / "d.mov")
    assert not is_clip(tmp_path / "gone.mp4")
    assert frame_name(0) == "00000.png" and frame_name(123) == "00123.png"


def test_a_folder_in_the_way_is_a_write_error_and_nothing_is_written(clip, tmp_path):
    (tmp_path / "out").write_text("a file where the run's folder should be")
    with pytest.raises(WriteError) as error:
        write_video(clip.frames, tmp_path / "out" / "result.mp4", 12)
    one_line(error, "out")
    assert (tmp_path / "out").read_text().startswith("a file")


@contextmanager
def without_root():
    """Root writes into any folder whatever its mode: as root, act as an ordinary user (the
    effective uid only, put back after) so that the folder's mode is what decides."""
    if os.geteuid() != 0:
        yield
        return
    import imageio_ffmpeg  # imported (and its ffmpeg found) while this Python's files are ours

    imageio_ffmpeg.get_ffmpeg_exe()
    os.seteuid(65534)  # nobody
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="Windows has no read-only folders by mode")
def test_a_read_only_folder_is_a_write_error(clip):
    # Not in tmp_path: pytest's folders are closed to users other than their owner.
    top = Path(tempfile.mkdtemp(prefix="nst-tf-locked-"))
    locked = top / "locked"
    locked.mkdir()
    top.chmod(0o755)
    locked.chmod(0o555)
    try:
        with without_root(), pytest.raises(WriteError) as error:
            write_video(clip.frames, locked / "result.mp4", 12)
        one_line(error, "result.mp4", "ermission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        shutil.rmtree(top)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_ffmpeg_failing_mid_write_keeps_the_earlier_result(tmp_path):
    import resource

    (tmp_path / "result.mp4").write_bytes(b"the earlier result")
    noise = np.random.default_rng(0).integers(0, 256, (20, 120, 160, 3), dtype=np.uint8)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # ffmpeg inherits it
    try:
        with pytest.raises(WriteError) as error:
            write_video(noise, tmp_path / "result.mp4", 12)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    one_line(error, "result.mp4", "ffmpeg")
    assert (tmp_path / "result.mp4").read_bytes() == b"the earlier result"
    assert leftovers(tmp_path) == []


def test_a_bad_frame_mid_write_keeps_the_earlier_result(clip, tmp_path):
    paths = write_frames(clip, tmp_path / "frames")
    paths[6].write_bytes(b"broken")
    (tmp_path / "result.mp4").write_bytes(b"the earlier result")
    with pytest.raises(UserError) as error:
        write_video(paths, tmp_path / "result.mp4", 12)
    one_line(error, "frame_0006.png")
    Image.fromarray(clip.frames[6][:70]).save(paths[6])  # two rows short
    with pytest.raises(UserError) as error:
        write_video(paths, tmp_path / "result.mp4", 12)
    one_line(error, "frame 6", "frame_0006.png", "96x70")
    assert (tmp_path / "result.mp4").read_bytes() == b"the earlier result"
    assert leftovers(tmp_path) == []


def test_without_imageio_ffmpeg_videos_say_what_to_install(clip, tmp_path, monkeypatch):
    write_video(clip.frames[:2], tmp_path / "a.mp4", 12)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import` now fails
    for attempt in (lambda: open_clip(tmp_path / "a.mp4"),
                    lambda: write_video(clip.frames[:2], tmp_path / "b.mp4", 12)):
        with pytest.raises(UserError) as error:
            attempt()
        one_line(error, "imageio-ffmpeg", "pip install 'nst-tf[video]'")
    write_frames(clip, tmp_path / "frames")
    assert open_clip(tmp_path / "frames").info.frames == 12  # frame folders need no ffmpeg
    assert not (tmp_path / "b.mp4").exists()
