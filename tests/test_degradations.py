"""The robustness sweep's degradations: deterministic, the image's size kept, and stronger
settings change the image more."""

import numpy as np
import pytest
from PIL import Image

from fakevlm.degradations import CLEAN, DEGRADATIONS, augment, degrade


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1)))   # blocks, then grain on top
    return Image.fromarray(np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8))


def change(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())


@pytest.mark.parametrize(("kind", "mild", "strong"), [("jpeg", 95, 30), ("rescale", 0.5, 0.25), ("blur", 1.0, 2.0)])
def test_each_degradation_is_deterministic_keeps_the_size_and_grows_with_strength(photo, kind, mild, strong):
    once, again = degrade(photo, kind, mild), degrade(photo, kind, mild)
    assert once.tobytes() == again.tobytes() and once.size == photo.size and once.mode == "RGB"
    assert 0 < change(photo, once) < change(photo, degrade(photo, kind, strong))


def test_blur_removes_the_grain(photo):
    def fine_energy(image):
        pixels = np.asarray(image, float)
        return np.abs(np.diff(pixels, axis=1)).mean()
    assert fine_energy(degrade(photo, "blur", 2.0)) < 0.5 * fine_energy(photo)


def test_every_kind_has_a_clean_strength_and_unknown_kinds_are_refused(photo):
    assert set(CLEAN) == set(DEGRADATIONS)
    assert change(photo, degrade(photo, "rescale", CLEAN["rescale"])) == 0
    with pytest.raises(ValueError, match="unknown degradation 'noise'"):
        degrade(photo, "noise", 1)


def test_augment_applies_each_degradation_with_its_probability(photo):
    params = {"blur": {"p": 0.5, "sigma": [0.0, 3.0]}, "jpeg": {"p": 0.5, "quality": [30, 100]}}
    assert augment(photo, params, [0.9, 0.0, 0.9, 0.0]).tobytes() == photo.tobytes()   # neither drawn
    assert augment(photo, params, [0.1, 0.5, 0.9, 0.0]).tobytes() == degrade(photo, "blur", 1.5).tobytes()
    assert augment(photo, params, [0.9, 0.0, 0.1, 0.5]).tobytes() == degrade(photo, "jpeg", 65).tobytes()
    both = augment(photo, params, [0.1, 1.0, 0.1, 0.0])
    assert both.tobytes() == degrade(degrade(photo, "blur", 3.0), "jpeg", 30).tobytes()
