"""Readers of FakeClue's archives, LOKI, DD-VQA and plain folders, on fixtures in their real formats."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakevlm.formats import open_image, read_ddvqa, read_fakeclue, read_folder, read_loki
from fakevlm.formats.fakeclue import PROMPT
from fakevlm.pipelines.ingestion.nodes import with_defaults

from .conftest import load_params
from .upstream_formats import png, write_ddvqa, write_ff, write_images, write_loki

FF_FAKE = "ff++/fake/Deepfakes/c23/frames/071_054/160.png"
FF_REAL = "ff++/real/youtube/c23/frames/071/160.png"


def _fakeclue_records() -> list[dict]:
    answer = [{"from": "human", "value": PROMPT}, {"from": "gpt", "value": "This is a fake image. Blurry nose."}]
    return [{"image": FF_FAKE, "label": 0, "cate": "deepfake", "width": 12, "height": 10, "conversations": answer},
            {"image": FF_REAL, "label": 1, "cate": "deepfake", "width": 12, "height": 10}]


@pytest.mark.parametrize("top", ["test/", "test/test/"])
def test_fakeclue_zip_read_in_place(tmp_path, top):
    archive = tmp_path / "test.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(top + FF_FAKE, png(0))
        handle.writestr(top + FF_REAL, png(1))
        handle.writestr("../../evil.png", png(2))  # zip-slip: would land outside the target
    annotations = tmp_path / "data_json" / "test.json"
    annotations.parent.mkdir()
    annotations.write_text(json.dumps(_fakeclue_records()))
    rows, rejects = read_fakeclue({"name": "fc", "annotations": str(annotations), "images": str(archive),
                                   "split": "test", "workers": 2})
    assert rows["id"].tolist() == [f"fc/test/{FF_FAKE}", f"fc/test/{FF_REAL}"]
    assert rows["image_path"].iloc[0] == f"zip://{top}{FF_FAKE}::{archive.as_posix()}"
    assert rows["sha256"].iloc[0] == hashlib.sha256(png(0)).hexdigest()
    assert rows["reference_answer"].iloc[0] == "This is a fake image. Blurry nose."
    with open_image(rows["image_path"].iloc[1]) as image:  # later stages open archived images this way
        assert image.size == (12, 10)
    assert len(rejects) == 1 and rejects[0]["path"] == "../../evil.png"
    assert rejects[0]["reason"].startswith("unsafe_path: ") and "outside the root" in rejects[0]["reason"]
    assert not (tmp_path.parent / "evil.png").exists()  # nothing was extracted


def test_fakeclue_folder_one_level_deeper(tmp_path):
    write_images(tmp_path / "test" / "test", [FF_FAKE, FF_REAL])
    annotations = tmp_path / "test.json"
    annotations.write_text(json.dumps(_fakeclue_records()))
    rows, rejects = read_fakeclue({"name": "fc", "annotations": str(annotations), "images": str(tmp_path / "test"),
                                   "split": "test", "workers": 0})
    assert rejects == [] and rows["image_path"].iloc[0] == (tmp_path / "test" / "test" / FF_FAKE).as_posix()


def _loki_source(root: Path, annotations: Path, **extra) -> dict:
    """A minimal LOKI source, with the format's defaults from conf as ingestion applies them."""
    source = {"name": "loki", "format": "loki", "split": "loki", "images": str(root), "annotations": str(annotations)}
    return with_defaults({**source, **extra, "workers": 0}, load_params("ingestion")["format_defaults"])


def test_loki_as_upstream_ships_it(tmp_path):
    folder = write_loki(tmp_path)
    rows, rejects = read_loki(_loki_source(tmp_path, folder))
    got = {row.image_path.rsplit("/", 1)[1]: (row.label, row.category) for row in rows.itertuples()}
    assert got == {"a.png": ("fake", "animal"), "b.jpg": ("real", "animal"), "c.JPG": ("real", "scene"),
                   "d.png": ("fake", "scene"), "e.png": ("fake", "human")}
    assert rows["id"].is_unique and rows["id"].iloc[0].startswith("loki/loki/media_data/image/")
    by_image = rows.set_index(rows["image_path"].str.rsplit("/", n=1).str[1])
    assert (by_image.at["c.JPG", "width"], by_image.at["c.JPG", "height"]) == (9, 7)
    # every question about an image is kept with it: a.png has 2 true/false, 3 multiple-choice, 1 open-ended
    questions = json.loads(by_image.at["a.png", "original"])["questions"]
    assert sorted(q["question_type"] for q in questions) == sorted(
        ["image_tf_image_fake_ask_fake_animals", "image_tf_image_fake_ask_real_animals", "image_mc_real_from_fake_animals",
         "image_mc_real_from_fake_animals", "image_mc_fake_from_real_animals", "image_open_ended_vqa"])
    assert by_image.at["e.png", "reference_answer"] == "This is a fake image. The skin is waxy. The left ear melts into the hair."
    assert by_image.at["a.png", "reference_answer"] == "This is a fake image. Fur éclat without strands."
    regions = [q["problems"]["regional"] for q in json.loads(by_image.at["e.png", "original"])["questions"] if "problems" in q]
    assert regions == [[{"region": [1.5, 2, 3, 4], "desc": "The left ear melts into the hair."}]]
    assert pd.isna(by_image.at["b.jpg", "reference_answer"])
    reasons = sorted((r["reason"].split(":")[0], r["record"]) for r in rejects)
    tf, mc = folder / "true_or_false.json", folder / "multi_choice.json"
    assert reasons == [("label_conflict", f"{mc}: record 4"), ("label_conflict", f"{tf}: record 12"),
                       ("no_category", f"{folder / 'open_ended_vqa.json'}: image 'media_data/image/o.png'"),
                       ("unmapped_category", f"{tf}: image 'media_data/image/m.png'")]
    assert all(r["reason"].split(": ", 1)[1].startswith(r["record"]) for r in rejects)
    assert next(r["path"] for r in rejects if r["record"] == f"{tf}: record 12") == "media_data/image/d.png"
    assert "'medicine'" in next(r["reason"] for r in rejects if r["reason"].startswith("unmapped_category"))
    # one more category mapped in the source: the others stay mapped
    rows, rejects = read_loki(_loki_source(tmp_path, folder, categories={"medicine": "human"}))
    assert dict(zip(rows["image_path"].str[-5:], rows["category"]))["m.png"] == "human" and len(rows) == 6


def test_loki_open_ended_alone_takes_categories_from_beside(tmp_path):
    folder = write_loki(tmp_path)
    rows, rejects = read_loki(_loki_source(tmp_path, folder / "open_ended_vqa.json"))
    assert dict(zip(rows["image_path"].str[-5:], rows["category"])) == {"a.png": "animal", "e.png": "human"}
    assert set(rows["label"]) == {"fake"} and rows["reference_answer"].notna().all()
    assert [r["reason"].split(":")[0] for r in rejects] == ["no_category"]


def _ddvqa_source(annotations: Path, images: Path, **extra) -> dict:
    source = {"name": "dd", "format": "ddvqa", "split": "ddvqa", "images": str(images), "annotations": str(annotations)}
    return with_defaults({**source, **extra, "workers": 0}, load_params("ingestion")["format_defaults"])


def test_ddvqa_test_set_on_faceforensics_layout(tmp_path):
    test_set = write_ddvqa(tmp_path / "DQ_FF++")
    ff = tmp_path / "FaceForensics++"
    write_ff(ff, ["youtube/c23/images/071/0000.png", "youtube/c23/images/071/0001.png",
                   "Deepfakes/c23/images/071_054/0000.png", "NeuralTextures/c23/images/033_097/0000.png"])
    rows, rejects = read_ddvqa(_ddvqa_source(test_set, ff))
    by_path = rows.set_index(rows["image_path"].str.split("/FaceForensics\\+\\+/").str[1])
    assert by_path["label"].to_dict() == {"manipulated_sequences/Deepfakes/c23/images/071_054/0000.png": "fake",
                                          "manipulated_sequences/NeuralTextures/c23/images/033_097/0000.png": "fake",
                                          "original_sequences/youtube/c23/images/071/0000.png": "real",
                                          "original_sequences/youtube/c23/images/071/0001.png": "real"}
    assert set(rows["category"]) == {"deepfake"}
    real = by_path.loc["original_sequences/youtube/c23/images/071/0001.png"]     # question "1": the second frame
    # FakeClue's form: the conf's verdict sentence, then the human answer (of several, the longest
    # that explains without stating the other verdict)
    assert real.reference_answer == ("This is a real image. "
                                     "The person's skin looks real because it has pores and fine hair.")
    assert by_path.loc["manipulated_sequences/Deepfakes/c23/images/071_054/0000.png"].reference_answer == (
        "This is a fake image. The image looks fake. The face boundary is blurred near the jaw.")
    assert pd.isna(by_path.loc["original_sequences/youtube/c23/images/071/0000.png"].reference_answer)
    fake = json.loads(by_path.loc["manipulated_sequences/NeuralTextures/c23/images/033_097/0000.png"].original)
    assert (fake["manipulation"], fake["manipulation_id"], fake["qid"]) == ("NeuralTextures", 6, "0")
    reasons = sorted((r["reason"].split(":")[0], r["record"].rsplit("/", 1)[1]) for r in rejects)
    assert reasons == [("bad_label", "Deepfakes.json: key '4_999'"),
                       ("image_missing", "Neuraltexture.json: key '6_033_097' question '1'")]   # frame 0001 missing
    missing = next(r for r in rejects if r["reason"].startswith("image_missing"))
    assert missing["path"].endswith("manipulated_sequences/NeuralTextures/c23/images/033_097/0001.png")


def test_ddvqa_one_file_other_compression_and_numbering(tmp_path):
    test_set = write_ddvqa(tmp_path / "DQ_FF++")
    ff = tmp_path / "ff"
    write_ff(ff, ["NeuralTextures/c40/images/033_097/0001.png", "NeuralTextures/c40/images/033_097/0002.png"])
    rows, rejects = read_ddvqa(_ddvqa_source(test_set / "Neuraltexture" / "Neuraltexture.json", ff,
                                             compression="c40", first_frame=1))
    assert rows["image_path"].str.endswith(("033_097/0001.png", "033_097/0002.png")).all() and len(rows) == 2
    assert rejects == []


def test_ddvqa_split_file_is_refused_with_what_to_pass(tmp_path):
    root = tmp_path / "DQ_FF++"
    write_ddvqa(root)
    rows, rejects = read_ddvqa(_ddvqa_source(root / "split" / "test.json", tmp_path))
    assert rows.empty and len(rejects) == 1
    reason = rejects[0]["reason"]
    assert reason.startswith(f"unreadable_file: {root / 'split' / 'test.json'}: ") and "DQ_FF++/test_set" in reason


def test_folder_real_and_fake(tmp_path):
    write_images(tmp_path / "mine", ["real/a.png", "real/sub/b.png", "fake/c.png", "other/d.png"])
    (tmp_path / "mine" / "fake" / "notes.txt").write_text("not an image")
    rows, rejects = read_folder({"name": "mine", "images": str(tmp_path / "mine"), "split": "test",
                                 "category": "scene", "workers": 2})
    assert rows["label"].tolist() == ["fake", "real", "real"] and set(rows["category"]) == {"scene"}
    assert [r["reason"].split(":")[0] for r in rejects] == ["image_undecodable"]
    assert "notes.txt" in rejects[0]["reason"]


def test_a_verdict_without_both_labels_is_a_clear_error(tmp_path):
    folder = write_loki(tmp_path)
    with pytest.raises(ValueError, match=r"source 'loki': `verdict` must map \['real', 'fake'\] to a sentence"):
        read_loki(_loki_source(tmp_path, folder, verdict="This is a fake image."))
