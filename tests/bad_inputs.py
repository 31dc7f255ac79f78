"""A bad-input set of many kinds of bad record and file, in every source format.

Shared by the ingestion node test and the `kedro run` acceptance test.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_bad_sources(tmp_path: Path) -> tuple[list[dict], int]:
    """Sources of every format with bad records and files; returns them and the expected rejects.

    Two decodable but unusable images (a sliver, a 16-bit picture) pass ingestion and are
    validation's to quarantine.
    """
    images = tmp_path / "fc"
    for name in ("ok.png", "dup.png", "ok2.png"):
        (images / "x" / name).parent.mkdir(parents=True, exist_ok=True)
        (images / "x" / name).write_bytes(_png(len(name)))
    (images / "x" / "empty.png").write_bytes(b"")
    (images / "x" / "text.png").write_text("hello")
    (images / "x" / "trunc.png").write_bytes(_png(9)[:40])
    (images / "x" / "dir.png").mkdir()
    os.symlink("/etc/hostname", images / "x" / "link.png")
    # Decodable, so ingestion keeps them; validation must quarantine them.
    Image.new("RGB", (64, 4), "gray").save(images / "x" / "sliver.png")
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(images / "x" / "deep16.png")
    nested = images / "ff++/fake/Deepfakes/c23/frames/071_054/160.png"   # FakeClue's deepfake layout
    nested.parent.mkdir(parents=True)
    nested.write_bytes(_png(99))
    # FakeClue records carry their answer; the annotation stage keeps it (keep_source_answers)
    answer = [{"from": "human", "value": "<image>Does the image looks real/fake?"},
              {"from": "gpt", "value": "This is a fake image. The fur lacks the fine texture of a photograph."}]
    good = {"label": 0, "cate": "animal", "conversations": answer}
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
        {"image": "x/ok2.png", **good, "conversations": "hi"},        # 18 bad_field
        {"image": "x/sliver.png", **good},                  # accepted here; validation: aspect ratio
        {"image": "x/deep16.png", **good},                  # accepted here; validation: 16-bit mode
        {"image": "ff++/fake/Deepfakes/c23/frames/071_054/160.png", "label": 0, "cate": "deepfake"},
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
        {"image_path": ["x/ok2.png"] * 3, "question_type": "image_mc_fake_from_real_animals",
         "answer": "A"},                                                          # 22 bad_field (3 images)
        {"image_path": "x/ok2.png", "question_type": "image_tf_image_fake_ask_fake_animals",
         "answer": "maybe"},                                                      # 23 bad_label
        {"image_path": "x/ok2.png", "answer": "Yes"},                             # 24 missing_field
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
