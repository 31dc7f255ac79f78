"""A bad-input set of many kinds of bad record and file: no crash, every item accounted for."""

from __future__ import annotations

import pytest

from fakevlm.pipelines.ingestion.nodes import build_manifest

from ...bad_inputs import write_bad_sources


@pytest.fixture
def bad_sources(tmp_path) -> tuple[list[dict], int]:
    return write_bad_sources(tmp_path)


def test_bad_input_loses_nothing_and_names_everything(bad_sources, params):
    sources, expected = bad_sources
    manifest, quarantine, summary = build_manifest({}, {**params, "sources": sources})
    assert manifest["id"].tolist() == ["fc/test/ff++/fake/Deepfakes/c23/frames/071_054/160.png", "fc/test/x/deep16.png",
                                       "fc/test/x/dup.png", "fc/test/x/ok.png", "fc/test/x/sliver.png", "zip/test/a.png"]
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
