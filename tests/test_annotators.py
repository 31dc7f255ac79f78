"""The annotators' building blocks: prompt library, cache, measurements, the grounded annotator."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakevlm.annotators import build_annotator, requests_for, run_cached
from fakevlm.annotators.cache import AnnotationCache
from fakevlm.annotators.grounded import MEASURED, strength_word
from fakevlm.annotators.measurements import load_stack, measure
from fakevlm.annotators.prompts import render_prompt

from .conftest import load_params
from .test_annotators_helpers import (
    annotation_params,
    grey_image,
    prompts,
    tiny_manifest,
)


def test_every_category_has_an_instruction_per_label_and_five_aspects_covering_every_measurement():
    library = prompts()
    assert len(library["categories"]) == 7
    for category, entry in library["categories"].items():
        assert set(entry["instruction"]) == {"real", "fake"}, category
        assert len(entry["aspects"]) == 5, category
        # an unquoted comma in a YAML flow mapping would split an aspect's name into two keys
        assert all(set(aspect) == {"name", "subject", "evidence", "keywords"} for aspect in entry["aspects"]), category
        evidence = [kind for aspect in entry["aspects"] for kind in aspect["evidence"]]
        assert sorted(evidence) == sorted([*MEASURED, "artifact"]), category


def test_prompt_names_the_label_the_instruction_and_the_five_aspects():
    library = prompts()
    text = render_prompt(library, "instruct", "animal", "fake", "This is a fake image.")
    assert library["categories"]["animal"]["instruction"]["fake"] in text
    assert "(5) overall colour and image processing" in text
    assert library["label_words"]["fake"] in text and '"This is a fake image."' in text


def test_prompt_hashes_differ_by_category_and_label_and_follow_the_library(tmp_path):
    library = prompts()
    params = annotation_params(tmp_path)
    annotator = build_annotator("grounded", params, library, None)
    rows = tiny_manifest(tmp_path / "images", n=4)
    hashes = {(r.category, r.label): r.prompt_hash for r in requests_for(rows, annotator, library, params["verdict"])}
    assert len(set(hashes.values())) == 4
    library["categories"]["animal"]["aspects"][0]["subject"] = "the beast"
    changed = {(r.category, r.label): r.prompt_hash for r in requests_for(rows, annotator, library, params["verdict"])}
    assert changed[("animal", "real")] != hashes[("animal", "real")]
    assert changed[("human", "fake")] == hashes[("human", "fake")]


def test_cache_round_trip_and_keys_depend_on_every_part(tmp_path):
    cache = AnnotationCache(tmp_path)
    parts = ("sha", "grounded", "m1", "p1")
    key = cache.key(*parts)
    assert cache.get(key) is None
    cache.put(key, {"answer": "x"})
    assert cache.get(key) == {"answer": "x"}
    assert len({cache.key(*parts[:i], "other", *parts[i + 1 :]) for i in range(4)} | {key}) == 5
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key}.json"]  # no temporary left


def test_cache_ignores_a_half_written_temporary_file(tmp_path):
    cache = AnnotationCache(tmp_path)
    key = cache.key("sha", "a", "m", "p")
    (tmp_path / key[:2]).mkdir()
    (tmp_path / key[:2] / f".{key}-abc.tmp").write_text('{"answer": "trunc')  # a kill -9 mid-write
    assert cache.get(key) is None


def test_spectral_peak_finds_a_two_pixel_grid_and_not_plain_noise():
    rng = np.random.default_rng(0)
    noise = rng.integers(60, 190, (64, 64, 3)).astype(np.uint8)
    grid = noise.copy()
    grid[::2, ::2] = 255
    values = measure(load_stack([Image.fromarray(noise), Image.fromarray(grid)]), 8)
    assert values["spectral"][1] > 5 * values["spectral"][0]
    assert values["spectral_period"][1] == 2.0


def test_noise_inconsistency_locates_a_smooth_patch():
    rng = np.random.default_rng(1)
    pixels = rng.normal(128, 20, (60, 60, 3))
    pixels[40:60, 0:20] = 128  # the lower left cell has no grain at all
    values = measure(load_stack([Image.fromarray(pixels.clip(0, 255).astype(np.uint8))]), 8)
    assert values["noise_cell"][0] == 6 and values["noise_sign"][0] == -1
    assert values["noise"][0] > 3


def test_blockiness_sees_a_jpeg_grid():
    rng = np.random.default_rng(2)
    smooth = np.cumsum(rng.normal(0, 2, (64, 64, 3)), axis=1) + 100
    clean = Image.fromarray(smooth.clip(0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    clean.save(buffer, format="JPEG", quality=10)
    values = measure(load_stack([clean, Image.open(buffer).convert("RGB")]), 8)
    assert values["blockiness"][1] > values["blockiness"][0] + 0.5


def test_a_grey_image_has_no_colour_claim():
    values = measure(load_stack([grey_image()]), 8)
    assert np.isnan(values["colour"][0])


@pytest.mark.parametrize(("strength", "word"), [(None, "faint"), (0.0, "faint"), (0.39, "faint"), (0.4, "clear"), (0.9, "strong")])
def test_strength_words(strength, word):
    assert strength_word(strength, load_params("annotation")["strength_words"]) == word


def _grounded_answers(tmp_path, params=None, rows=None):
    params = params or annotation_params(tmp_path)
    rows = tiny_manifest(tmp_path / "images") if rows is None else rows
    annotator = build_annotator("grounded", params, prompts(), None)
    out = {}
    errors = annotator.annotate(requests_for(rows, annotator, prompts(), params["verdict"]), lambda r, a: out.__setitem__(r.id, a))
    return rows, out, errors


def test_grounded_fake_states_the_record_fact_and_the_measured_period(tmp_path):
    rows, answers, errors = _grounded_answers(tmp_path)
    assert errors == {}
    fake = answers["img001"]  # category human, checkerboard over the whole image
    assert fake.startswith("This is a fake image. The whole image carries a strong checkerboard pattern")
    assert "The fine detail of the skin repeats every 2 pixels" in fake
    for row in rows.itertuples():
        assert answers[row.id].startswith(f"This is a {row.label} image.")


def test_grounded_makes_no_claim_without_a_measurement(tmp_path):
    params = annotation_params(tmp_path)
    for kind, bounds in params["available"]["grounded"]["bounds"].items():
        # out of reach: detail claims a fake below its bound and a real image above it
        bounds.update(fake=0.0, real=1e9) if kind == "detail" else bounds.update(fake=1e9, real=0.0)
    _, answers, _ = _grounded_answers(tmp_path, params)
    assert answers["img000"] == "This is a real image."  # nothing measured: nothing said
    assert answers["img001"] == ("This is a fake image. " + params["families"]["checkerboard"].format(
        Region="The whole image", region="the whole image", strength="strong"))


def test_grounded_reports_an_unreadable_image_and_answers_the_rest(tmp_path):
    rows = tiny_manifest(tmp_path / "images", n=4)
    rows.loc[2, "image_path"] = str(tmp_path / "missing.png")
    _, answers, errors = _grounded_answers(tmp_path, rows=rows)
    assert set(errors) == {"img002"} and "FileNotFoundError" in errors["img002"]
    assert set(answers) == {"img000", "img001", "img003"}


class CountingAnnotator:
    def __init__(self, name="counting", model="m1"):
        self.name, self.model, self.template, self.asked = name, model, "instruct", []

    def annotate(self, requests, done):
        for request in requests:
            self.asked.append(request.id)
            done(request, f"This is a {request.label} image. Clue for {request.id}.")
        return {}


def test_run_cached_asks_only_what_it_has_not_answered(tmp_path):
    cache = AnnotationCache(tmp_path / "cache")
    rows = tiny_manifest(tmp_path / "images", n=6)
    first = CountingAnnotator()
    requests = requests_for(rows, first, prompts(), annotation_params(tmp_path)["verdict"])
    out = run_cached(first, requests[:4], cache)
    assert first.asked == ["img000", "img001", "img002", "img003"]
    again = CountingAnnotator()
    out_again = run_cached(again, requests, cache)
    assert again.asked == ["img004", "img005"]
    pd.testing.assert_frame_equal(out, out_again.iloc[:4])
    other_model = CountingAnnotator(model="m2")
    run_cached(other_model, requests, cache)
    assert len(other_model.asked) == 6  # another model: its own entries


def test_cache_entries_record_what_produced_them(tmp_path):
    cache = AnnotationCache(tmp_path / "cache")
    rows = tiny_manifest(tmp_path / "images", n=1)
    annotator = CountingAnnotator()
    request = requests_for(rows, annotator, prompts(), annotation_params(tmp_path)["verdict"])[0]
    run_cached(annotator, [request], cache)
    entry = json.loads(next((tmp_path / "cache").rglob("*.json")).read_text())
    assert entry == {"annotator": "counting", "model": "m1", "prompt_hash": request.prompt_hash,
                     "image_sha256": request.sha256, "answer": "This is a real image. Clue for img000."}


def test_the_api_key_comes_from_kedro_credentials_and_is_never_described():
    from kedro.io import DataCatalog

    entry = {"type": "fakevlm.annotators.credentials.AnnotatorCredentials", "credentials": "annotator_api"}
    catalog = DataCatalog.from_config({"annotator_credentials": entry}, {"annotator_api": {"api_key": "sk-secret"}})
    assert catalog.load("annotator_credentials") == {"api_key": "sk-secret"}
    assert "sk-secret" not in repr(catalog["annotator_credentials"])
    without = DataCatalog.from_config({"annotator_credentials": {"type": entry["type"]}})
    assert without.load("annotator_credentials") == {}
