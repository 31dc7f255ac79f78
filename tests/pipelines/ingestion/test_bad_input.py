"""A bad-input set of many kinds of bad record and file: no crash, every item accounted for."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from fakevlm.pipelines.ingestion.nodes import build_manifest


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def bad_sources(tmp_path) -> tuple[list[dict], int]:
    """Sources of every format with bad records and files; returns them and the expected rejects."""
    images = tmp_path / "fc"
    for name in ("ok.png", "dup.png", "ok2.png"):
        (images / "x" / name).parent.mkdir(parents=True, exist_ok=True)
        (images / "x" / name).write_bytes(_png(len(name)))
    (images / "x" / "empty.png").write_bytes(b"")
    (images / "x" / "text.png").write_text("hello")
    (images / "x" / "trunc.png").write_bytes(_png(9)[:40])
    (images / "x" / "dir.png").mkdir()
    os.symlink("/etc/hostname", images / "x" / "link.png")
    good = {"label": 0, "cate": "animal"}
    records = [
        {"image": "x/ok.png", **good},                      # accepted
        {"image": "x/dup.png", **good},                     # accepted
        {"image": "x/dup.png", **good},                     # 1 duplicate_path
        "just a string",                                    # 2 not_an_object
        {"label": 0, "cate": "animal"},                     # 3 missing_field
        {"image": "x/ok2.png", "label": "fake", "cate": "animal"},  # 4 bad_label
        {"image": "x/ok2.png", "label": True, "cate": "animal"},    # 5 bad_label (bool)
        {"image": "x/ok2.png", "label": 0, "cate": "cartoon"},      # 6 unknown_category
        {"image": "../fc/x/ok.png", **good},                # 7 unsafe_path
        {"image": "/etc/passwd", **good},                   # 8 unsafe_path
        {"image": "C:\\x\\ok.png", **good},                 # 9 unsafe_path
        {"image": "", **good},                              # 10 bad_path
        {"image": "x/none.png", **good},                    # 11 image_missing
        {"image": "x/empty.png", **good},                   # 12 image_undecodable
        {"image": "x/text.png", **good},                    # 13 image_undecodable
        {"image": "x/trunc.png", **good},                   # 14 image_undecodable
        {"image": "x/dir.png", **good},                     # 15 image_missing (a folder)
        {"image": "x/link.png", **good},                    # 16 unsafe_path (symlink out of the root)
        {"image": "x/ok2.png", "artifact": {"strength": 7}, **good},  # 17 bad_field
        {"image": "x/ok2.png", "conversations": "hi", **good},        # 18 bad_field
    ]
    fc_json = tmp_path / "fc.json"
    fc_json.write_text(json.dumps(records))
    archive = tmp_path / "test.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("test/a.png", _png(1))
        handle.writestr("/abs.png", _png(2))                # 19 unsafe member
        handle.writestr("../../slip.png", _png(3))          # 20 unsafe member
    zip_json = tmp_path / "zip.json"
    zip_json.write_text(json.dumps([{"image": "a.png", **good}, {"image": "b.png", **good}]))  # 21 missing member
    loki_json = tmp_path / "loki.json"
    loki_json.write_text(json.dumps([
        {"image_path": ["x/ok2.png"] * 3, "type_sec": "Animal", "answer": "A"},   # 22 bad_field (3 images)
        {"image_path": "x/ok2.png", "type_sec": "Animal", "answer": "maybe"},     # 23 bad_label
        {"image_path": "x/ok2.png", "answer": "fake"},                            # 24 missing_field
    ]))
    dd_json = tmp_path / "dd.json"
    dd_json.write_text(json.dumps({"nokey": {}, "9_001": {}, "0_002": [],        # 25-27 bad key, id, value
                                   "0_003": {"0": {"question": "q", "answer": "not a list"}}}))  # 28 bad_field
    sources = [
        {"name": "fc", "format": "fakeclue", "images": str(images), "annotations": str(fc_json), "split": "test"},
        {"name": "zip", "format": "fakeclue", "images": str(archive), "annotations": str(zip_json), "split": "test"},
        {"name": "loki", "format": "loki", "images": str(images), "annotations": str(loki_json), "split": "test"},
        {"name": "dd", "format": "ddvqa", "images": str(images), "annotations": str(dd_json), "split": "test"},
        {"name": "folder", "format": "folder", "images": str(images), "category": "nope", "split": "test"},
    ]
    return sources, 28


def test_bad_input_loses_nothing_and_names_everything(bad_sources, params):
    sources, expected = bad_sources
    manifest, quarantine, summary = build_manifest({}, {**params, "sources": sources})
    assert manifest["id"].tolist() == ["fc/test/x/dup.png", "fc/test/x/ok.png", "zip/test/a.png"]
    assert len(quarantine) == expected  # the folder source has no real/ fake/: nothing to read
    assert summary["records_in"] == summary["accepted"] + summary["quarantined"] == len(manifest) + expected
    assert set(summary["by_reason"]) >= {"duplicate_path", "not_an_object", "missing_field", "bad_label",
                                         "unknown_category", "unsafe_path", "bad_path", "image_missing",
                                         "image_undecodable", "bad_field", "bad_key"}
    assert sum(s["records_in"] for s in summary["per_source"].values()) == summary["records_in"]
    assert (quarantine["stage"] == "ingestion").all()
    for row in quarantine.itertuples():
        # every reason names the file and the record it is about
        assert row.reason.split(": ", 1)[1].startswith(row.record), row
        assert any(str(p) in row.record for p in ("fc.json", "zip.json", "loki.json", "dd.json", "test.zip")), row
    fc = quarantine[quarantine["source"] == "fc"]
    assert sorted(fc["record"].str.extract(r"record (\d+)")[0].astype(int)) == list(range(2, 20))
