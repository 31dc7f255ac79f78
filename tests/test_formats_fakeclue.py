"""FakeClue format: writer (via FakeClueDataset) and reader agree; real FakeClue records read; bad input
names its file and record."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakevlm.datasets import FakeClueDataset
from fakevlm.formats.fakeclue import MANIFEST_COLUMNS, PROMPT, read_fakeclue, write_fakeclue_split


def _read(annotations, root, source: str, split: str, **extra) -> tuple[pd.DataFrame, list[dict]]:
    """read_fakeclue on one split, decoding in this process (workers 0) unless told otherwise."""
    return read_fakeclue({"name": source, "format": "fakeclue", "annotations": str(annotations),
                          "images": str(root), "split": split, "workers": 0, **extra})


def _picture(seed: int, size: tuple[int, int] = (12, 10)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _record(image: str, label: int, cate: str, **extra) -> dict:
    return {"image": image, "label": label, "cate": cate, "width": 999, "height": 999,
            "conversations": [{"from": "human", "value": PROMPT}], **extra}


def _mini_like_data() -> dict:
    """Two splits in FakeClue-mini's shape: human turn only, artifact and origin keys."""
    artifact = {"family": "checkerboard", "region": "the whole image", "strength": 0.75}
    train = [
        _record("animal/real/0000.png", 1, "animal", artifact=None, origin={"package": "skimage"}),
        _record("animal/fake/0001.png", 0, "animal", artifact=artifact, origin={"package": "skimage"}),
        _record("deepfake/fake/0003.png", 0, "deepfake",
                artifact={"family": "face_blend", "region": "the face", "strength": 0.5}),
    ]
    test = [_record("doc/real/0000.png", 1, "doc", artifact=None)]
    return {
        "train": {"records": train, "images": {r["image"]: _picture(i) for i, r in enumerate(train)}},
        "test": {"records": test, "images": {r["image"]: _picture(10, (8, 6)) for r in test}},
    }


def test_round_trip_through_dataset_and_reader(tmp_path):
    dataset = FakeClueDataset(path=str(tmp_path / "mini"))
    data = _mini_like_data()
    dataset.save(data)
    loaded = dataset.load()

    assert sorted(loaded) == ["test", "train"]
    frames = {split: _read(p["annotations"], p["images_root"], f"mini_{split}", split)[0]
              for split, p in loaded.items()}
    train = frames["train"]
    assert tuple(train.columns) == MANIFEST_COLUMNS
    assert len(train) == 3 and len(frames["test"]) == 1
    assert train["label"].tolist() == ["fake", "real", "fake"]  # sorted by id: animal/fake, animal/real, deepfake/fake
    assert train["id"].tolist() == ["mini_train/train/animal/fake/0001.png", "mini_train/train/animal/real/0000.png",
                                    "mini_train/train/deepfake/fake/0003.png"]
    # Size comes from the decoded file, not from the record (which says 999).
    assert set(zip(train["width"], train["height"])) == {(12, 10)}
    assert frames["test"][["width", "height"]].values.tolist() == [[8, 6]]
    for row in train.itertuples():
        path = Path(row.image_path)
        assert path.is_file() and "\\" not in row.image_path
        assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert json.loads(row.original)["image"] == row.image_path.split("/train/", 1)[1]
    blend = train.set_index("category").loc["deepfake"]
    assert (blend.artifact_family, blend.artifact_region, blend.artifact_strength) == ("face_blend", "the face", 0.5)
    real = train[train["label"] == "real"].iloc[0]
    assert pd.isna(real.artifact_family) and pd.isna(real.artifact_region) and math.isnan(real.artifact_strength)
    assert train["reference_answer"].isna().all()  # FakeClue-mini ships unannotated
    assert train["width"].dtype == np.int64 and train["artifact_strength"].dtype == np.float64
    assert train["artifact_family"].dtype == pd.StringDtype(na_value=np.nan)  # what Parquet gives back


def test_load_keeps_relative_paths_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = FakeClueDataset(path="data/01_raw/mini")
    dataset.save(_mini_like_data())
    assert dataset.load()["train"] == {"images_root": "data/01_raw/mini/train",
                                       "annotations": "data/01_raw/mini/data_json/train.json"}
    assert dataset._describe() == {"path": "data/01_raw/mini"}


def test_resave_leaves_exactly_the_new_content(tmp_path):
    target = tmp_path / "mini"
    dataset = FakeClueDataset(path=str(target))
    dataset.save(_mini_like_data())
    smaller = _mini_like_data()
    del smaller["test"]
    smaller["train"]["records"] = smaller["train"]["records"][:1]
    smaller["train"]["images"] = {"animal/real/0000.png": smaller["train"]["images"]["animal/real/0000.png"]}
    dataset.save(smaller)

    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == ["data_json/train.json", "train/animal/real/0000.png"]
    assert list(dataset.load()) == ["train"]
    assert [p.name for p in tmp_path.iterdir()] == ["mini"]  # no temp folders left beside it


def test_failed_save_keeps_the_previous_data(tmp_path):
    target = tmp_path / "mini"
    dataset = FakeClueDataset(path=str(target))
    dataset.save(_mini_like_data())
    before = (target / "data_json" / "train.json").read_bytes()
    broken = _mini_like_data()
    broken["train"]["images"].pop("animal/fake/0001.png")  # a record without its image
    with pytest.raises(Exception, match="no image for"):
        dataset.save(broken)
    assert (target / "data_json" / "train.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mini"]


def test_save_is_byte_identical_for_the_same_data(tmp_path):
    for name in ("a", "b"):
        FakeClueDataset(path=str(tmp_path / name)).save(_mini_like_data())
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


@pytest.fixture
def real_fakeclue(tmp_path) -> tuple[Path, Path]:
    """A FakeClue-like test split: gpt answers, nested ff++ paths, a system_prompt key, JPEG and PNG."""
    root = tmp_path / "FakeClue" / "test"
    records = [
        {"image": "ff++/fake/Deepfakes/c23/frames/071_054/160.png", "label": 0, "cate": "deepfake",
         "width": 16, "height": 16, "system_prompt": "You are a forensic analyst.",
         "conversations": [{"from": "human", "value": PROMPT},
                           {"from": "gpt", "value": "This is a fake image. The nostrils are pixelated."}]},
        {"image": "ff++/real/youtube/c23/frames/071/160.png", "label": 1, "cate": "deepfake",
         "width": 16, "height": 16,
         "conversations": [{"from": "human", "value": PROMPT},
                           {"from": "gpt", "value": "This is a real image. The skin texture is natural."}]},
        {"image": "genimage/fake/midjourney/img_001.jpg", "label": 0, "cate": "animal", "width": 20, "height": 14,
         "conversations": [{"from": "human", "value": PROMPT},
                           {"from": "gpt", "value": "This is a fake image. The fur is too uniform."}]},
    ]
    for index, record in enumerate(records):
        path = root / record["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        _picture(index, (record["width"], record["height"])).save(path)
    annotations = tmp_path / "FakeClue" / "data_json" / "test.json"
    annotations.parent.mkdir(parents=True)
    annotations.write_text(json.dumps(records))
    return annotations, root


def test_reads_real_fakeclue_records(real_fakeclue):
    annotations, root = real_fakeclue
    frame, rejects = _read(annotations, root, "fakeclue_test", "test", workers=2)  # through the process pool
    assert rejects == [] and len(frame) == 3
    assert frame["id"].tolist() == sorted(frame["id"])
    by_image = frame.set_index("id")
    row = by_image.loc["fakeclue_test/test/ff++/fake/Deepfakes/c23/frames/071_054/160.png"]
    assert row.label == "fake" and row.category == "deepfake" and row.source == "fakeclue_test"
    assert row.image_path == (root / "ff++/fake/Deepfakes/c23/frames/071_054/160.png").as_posix()
    assert row.reference_answer == "This is a fake image. The nostrils are pixelated."
    assert json.loads(row.original)["system_prompt"] == "You are a forensic analyst."
    assert by_image.loc["fakeclue_test/test/ff++/real/youtube/c23/frames/071/160.png"].label == "real"
    jpeg = by_image.loc["fakeclue_test/test/genimage/fake/midjourney/img_001.jpg"]
    assert (jpeg.width, jpeg.height) == (20, 14)
    assert frame["artifact_family"].isna().all() and frame["artifact_strength"].isna().all()


def test_repeated_image_is_quarantined(real_fakeclue):
    annotations, root = real_fakeclue
    records = json.loads(annotations.read_text())
    annotations.write_text(json.dumps([*records, records[0]]))
    frame, rejects = _read(annotations, root, "s", "test")
    assert frame["id"].is_unique and len(frame) == 3
    assert [r["record"] for r in rejects] == [f"{annotations}: record 3"]
    assert rejects[0]["reason"].startswith("duplicate_path:") and "record 0" in rejects[0]["reason"]


def _break(annotations: Path, root: Path, how: str) -> tuple[type[Exception] | str, list[str]]:
    """Damage the fixture one way; return the expected error type (or reject kind) and strings its message holds."""
    records = json.loads(annotations.read_text())
    first = str(root / records[1]["image"])
    if how == "missing json":
        annotations.unlink()
        return FileNotFoundError, [str(annotations), "not found"]
    if how == "invalid json":
        annotations.write_text('[{"image": "a.png",\n  "label": 0,,')
        return ValueError, [str(annotations), "invalid JSON", "line 2, column 14"]
    if how == "not a list":
        annotations.write_text('{"image": "a.png"}')
        return ValueError, [str(annotations), "list"]
    kind, expected = "bad_label", [str(annotations), "record 1", "label"]
    if how in ("image", "label", "cate"):
        del records[1][how]
        kind, expected = "missing_field", [str(annotations), "record 1", repr(how)]
    elif how == "label 2":
        records[1]["label"] = 2
    elif how == "unknown cate":
        records[1]["cate"] = "cartoon"
        kind, expected = "unknown_category", [str(annotations), "record 1", "cartoon"]
    elif how in ("dotdot", "absolute"):
        records[1]["image"] = "../outside.png" if how == "dotdot" else "/etc/passwd"
        kind, expected = "unsafe_path", [str(annotations), "record 1", records[1]["image"]]
    elif how == "image missing":
        Path(first).unlink()
        kind, expected = "image_missing", [str(annotations), "record 1", first, "not found"]
    elif how in ("image not decodable", "image truncated"):
        data = Path(first).read_bytes()
        Path(first).write_bytes(b"this is not a png" if how == "image not decodable" else data[: len(data) // 2])
        kind, expected = "image_undecodable", [str(annotations), "record 1", first, "not decodable"]
    annotations.write_text(json.dumps(records))
    return kind, expected


@pytest.mark.parametrize("how", ["missing json", "invalid json", "not a list"])
def test_bad_file_fails_the_source_naming_it(real_fakeclue, how):
    annotations, root = real_fakeclue
    error, expected = _break(annotations, root, how)
    with pytest.raises(error) as caught:
        _read(annotations, root, "fakeclue_test", "test")
    for text in expected:
        assert text in str(caught.value), (text, str(caught.value))


@pytest.mark.parametrize(
    "how",
    ["image", "label", "cate", "label 2", "unknown cate", "dotdot", "absolute", "image missing",
     "image not decodable", "image truncated"],
)
def test_bad_record_is_quarantined_naming_the_file_and_the_record(real_fakeclue, how):
    annotations, root = real_fakeclue
    kind, expected = _break(annotations, root, how)
    frame, rejects = _read(annotations, root, "fakeclue_test", "test")
    assert len(frame) == 2 and len(rejects) == 1  # the other two records are unaffected
    reject = rejects[0]
    assert reject["record"] == f"{annotations}: record 1" and reject["stage"] == "ingestion"
    assert reject["reason"].startswith(f"{kind}: ")
    for text in expected:
        assert text in reject["reason"], (text, reject["reason"])


def test_writer_refuses_records_without_images(tmp_path):
    record = _record("a/real/0.png", 1, "scene")
    with pytest.raises(ValueError, match="no image for"):
        write_fakeclue_split(tmp_path, "train", [record], {})
    with pytest.raises(ValueError, match="record 0.*label"):
        write_fakeclue_split(tmp_path, "train", [{**record, "label": "real"}], {"a/real/0.png": _picture(0)})


def test_reader_output_is_parquet_safe(tmp_path, real_fakeclue):
    annotations, root = real_fakeclue
    frame, _ = _read(annotations, root, "fakeclue_test", "test")
    frame.to_parquet(tmp_path / "m.parquet")
    back = pd.read_parquet(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(back, frame)  # same values and dtypes after a Parquet round trip
