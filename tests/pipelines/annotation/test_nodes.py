import math

import pandas as pd
import pytest

from fakevlm.explanations import grounded_answer, strength_word
from fakevlm.pipelines.annotation.nodes import annotate

from ...conftest import load_params


@pytest.fixture
def params():
    return load_params("annotation")


def manifest_rows(**overrides):
    row = {
        "id": "a",
        "label": "fake",
        "category": "animal",
        "artifact_family": "checkerboard",
        "artifact_region": "the upper left",
        "artifact_strength": 0.9,
        "reference_answer": None,
    }
    row.update(overrides)
    return row


def test_fake_answer_names_family_region_strength_and_category(params):
    answer = grounded_answer("fake", "animal", "checkerboard", "the upper left", 0.9, params)
    assert answer.startswith("This is a fake image. The upper left carries a strong checkerboard")
    assert answer.endswith(params["categories"]["animal"]["fake"])


def test_real_answer_has_no_artifact(params):
    answer = grounded_answer("real", "doc", None, None, None, params)
    assert answer == "This is a real image. " + params["categories"]["doc"]["real"]


@pytest.mark.parametrize(("strength", "word"), [(0.0, "faint"), (0.39, "faint"), (0.4, "clear"), (0.8, "strong"), (math.nan, "faint")])
def test_strength_words(params, strength, word):
    assert strength_word(strength, params["strength_words"]) == word


def test_categories_are_worded_differently(params):
    answers = {c: grounded_answer("fake", c, "oversmoothing", None, 0.5, params) for c in params["categories"]}
    assert len(set(answers.values())) == 7
    assert all("over-smoothed" in a for a in answers.values())


def test_unknown_family_and_bad_inputs(params):
    assert params["unknown_family"] in grounded_answer("fake", "scene", "mystery-gan", None, None, params)
    with pytest.raises(ValueError, match="label"):
        grounded_answer("maybe", "scene", None, None, None, params)
    with pytest.raises(ValueError, match="category 'cartoon'"):
        grounded_answer("real", "cartoon", None, None, None, params)


def test_annotate_keeps_source_answers_and_every_row(params):
    manifest = pd.DataFrame(
        [
            manifest_rows(id="a"),
            manifest_rows(id="b", label="real", artifact_family=None, artifact_region=None, artifact_strength=math.nan),
            manifest_rows(id="c", reference_answer="This is a fake image. The nostrils are pixelated."),
        ]
    )
    out = annotate(manifest, params)
    assert list(out["id"]) == ["a", "b", "c"]
    assert list(out["annotator"]) == ["grounded", "grounded", "source"]
    assert out.loc[2, "answer"] == "This is a fake image. The nostrils are pixelated."
    assert out.loc[1, "answer"].startswith("This is a real image.")
    rewritten = annotate(manifest, dict(params, keep_source_answers=False))
    assert rewritten.loc[2, "answer"].startswith("This is a fake image. The upper left")


def test_annotate_rejects_unknown_annotator(params):
    with pytest.raises(ValueError, match="unknown annotator"):
        annotate(pd.DataFrame([manifest_rows()]), dict(params, annotator="gpt-9"))
