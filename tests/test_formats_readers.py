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

FF_FAKE = "ff++/fake/Deepfakes/c23/frames/071_054/160.png"
FF_REAL = "ff++/real/youtube/c23/frames/071/160.png"


def _png(seed: int, size: tuple[int, int] = (12, 10)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(root: Path, names: list[str]) -> None:
    for seed, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(seed))


def _fakeclue_records() -> list[dict]:
    answer = [{"from": "human", "value": PROMPT}, {"from": "gpt", "value": "This is a fake image. Blurry nose."}]
    return [{"image": FF_FAKE, "label": 0, "cate": "deepfake", "width": 12, "height": 10, "conversations": answer},
            {"image": FF_REAL, "label": 1, "cate": "deepfake", "width": 12, "height": 10}]


@pytest.mark.parametrize("top", ["test/", "test/test/"])
def test_fakeclue_zip_read_in_place(tmp_path, top):
    archive = tmp_path / "test.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(top + FF_FAKE, _png(0))
        handle.writestr(top + FF_REAL, _png(1))
        handle.writestr("../../evil.png", _png(2))  # zip-slip: would land outside the target
    annotations = tmp_path / "data_json" / "test.json"
    annotations.parent.mkdir()
    annotations.write_text(json.dumps(_fakeclue_records()))
    rows, rejects = read_fakeclue({"name": "fc", "annotations": str(annotations), "images": str(archive),
                                   "split": "test", "workers": 2})
    assert rows["id"].tolist() == [f"fc/test/{FF_FAKE}", f"fc/test/{FF_REAL}"]
    assert rows["image_path"].iloc[0] == f"zip://{top}{FF_FAKE}::{archive.as_posix()}"
    assert rows["sha256"].iloc[0] == hashlib.sha256(_png(0)).hexdigest()
    assert rows["reference_answer"].iloc[0] == "This is a fake image. Blurry nose."
    with open_image(rows["image_path"].iloc[1]) as image:  # later stages open archived images this way
        assert image.size == (12, 10)
    assert len(rejects) == 1 and rejects[0]["path"] == "../../evil.png"
    assert rejects[0]["reason"].startswith("unsafe_path: ") and "outside the root" in rejects[0]["reason"]
    assert not (tmp_path.parent / "evil.png").exists()  # nothing was extracted


def test_fakeclue_folder_one_level_deeper(tmp_path):
    _write(tmp_path / "test" / "test", [FF_FAKE, FF_REAL])
    annotations = tmp_path / "test.json"
    annotations.write_text(json.dumps(_fakeclue_records()))
    rows, rejects = read_fakeclue({"name": "fc", "annotations": str(annotations), "images": str(tmp_path / "test"),
                                   "split": "test", "workers": 0})
    assert rejects == [] and rows["image_path"].iloc[0] == (tmp_path / "test" / "test" / FF_FAKE).as_posix()


def test_loki_single_pair_and_option_answers(tmp_path):
    _write(tmp_path / "media", ["a.png", "b.png", "c.jpg", "d.png", "e.png", "f.png"])
    questions = [
        {"image_path": "a.png", "question_type": "single", "type_sec": "Animal", "answer": "fake", "extra": 1},
        {"image_path": "b.png", "question_type": "single", "type_sec": "Scene",
         "question": "Is this image real or AI-generated?\nA. AI-generated\nB. Real", "answer": "B"},
        {"image_path": ["c.jpg", "d.png"], "question_type": "multi", "type_sec": "Human",
         "question": "Which image is AI-generated? A: the first B: the second", "answer": "B"},
        {"image_path": "e.png", "question_type": "single", "type_sec": "Object", "question": "Is it?", "answer": "A"},
        {"image_path": "f.png", "question_type": "single", "type_sec": "Medicine", "answer": "real"},
    ]
    annotations = tmp_path / "loki.json"
    annotations.write_text(json.dumps(questions))
    source = {"name": "loki", "annotations": str(annotations), "images": str(tmp_path / "media"), "split": "test",
              "workers": 0}
    rows, rejects = read_loki(source)
    labels = dict(zip(rows["image_path"].str.rsplit("/", n=1).str[1], rows["label"]))
    assert labels == {"a.png": "fake", "b.png": "real", "c.jpg": "real", "d.png": "fake"}
    assert dict(zip(rows["image_path"].str[-5:], rows["category"]))["c.jpg"] == "human"
    pair = [json.loads(o) for o in rows["original"] if "image_index" in json.loads(o)]
    assert sorted(o["image_index"] for o in pair) == [0, 1] and json.loads(rows["original"].iloc[0])["extra"] == 1
    reasons = {r["record"]: r["reason"] for r in rejects}
    assert reasons[f"{annotations}: record 3"].startswith("bad_label: ") and "option A" in reasons[f"{annotations}: record 3"]
    assert reasons[f"{annotations}: record 4"].startswith("unknown_category: ") and "Medicine" in reasons[f"{annotations}: record 4"]
    # a configured rule decides what the question text does not
    rows, rejects = read_loki({**source, "options": {"A": "real", "B": "fake"}, "categories": {"medicine": "human"}})
    assert rejects == [] and len(rows) == 6


def test_ddvqa_keys_map_to_frames_in_question_order(tmp_path):
    frames = tmp_path / "frames"
    _write(frames, ["Original/071/0000.png", "Original/071/0001.png", "Deepfakes/071_054/0000.png",
                    "NeuralTextures/033_097/0000.png"])
    data = {
        "5_071": {"1": {"question": "Is the mouth natural?", "answer": ["Yes, the lips move naturally with speech."]},
                  "0": {"question": "Is this real?", "answer": ["Real."]}},
        "0_071_054": {"0": {"question": "What is wrong?", "answer": ["The face boundary is blurred near the jaw."]}},
        "6_033_097": {"0": {"question": "Fake?"}},  # no answer
        "4_999": {"0": {"question": "?", "answer": ["x"]}},  # manipulation id 4 does not exist
    }
    annotations = tmp_path / "ddvqa.json"
    annotations.write_text(json.dumps(data))
    rows, rejects = read_ddvqa({"name": "dd", "annotations": str(annotations), "images": str(frames), "split": "test",
                                "workers": 0})
    by_path = rows.set_index(rows["image_path"].str.split("/frames/").str[1])
    assert by_path.loc["Original/071/0000.png"].label == "real" and pd.isna(by_path.loc["Original/071/0000.png"].reference_answer)
    assert by_path.loc["Original/071/0001.png"].reference_answer == "Yes, the lips move naturally with speech."
    fake = by_path.loc["Deepfakes/071_054/0000.png"]
    assert (fake.label, fake.category) == ("fake", "deepfake")
    assert json.loads(fake.original)["manipulation"] == "Deepfakes" and json.loads(fake.original)["qid"] == "0"
    assert sorted(r["reason"].split(":")[0] for r in rejects) == ["bad_label", "missing_field"]
    assert any("'4_999'" in r["record"] for r in rejects) and any("'6_033_097' question '0'" in r["record"] for r in rejects)


def test_folder_real_and_fake(tmp_path):
    _write(tmp_path / "mine", ["real/a.png", "real/sub/b.png", "fake/c.png", "other/d.png"])
    (tmp_path / "mine" / "fake" / "notes.txt").write_text("not an image")
    rows, rejects = read_folder({"name": "mine", "images": str(tmp_path / "mine"), "split": "test",
                                 "category": "scene", "workers": 2})
    assert rows["label"].tolist() == ["fake", "real", "real"] and set(rows["category"]) == {"scene"}
    assert [r["reason"].split(":")[0] for r in rejects] == ["image_undecodable"]
    assert "notes.txt" in rejects[0]["reason"]
