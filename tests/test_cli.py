"""`fakevlm detect` and `fakevlm registry` as a user calls them."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from mlflow import MlflowClient

from fakevlm.console import REGISTRY, main
from fakevlm.datasets import HFModelDataset
from fakevlm.detector import load_detector
from fakevlm.formats.fakeclue import QUESTION
from fakevlm.metrics import parse_verdict
from fakevlm.model import FAKECLUE_MAX_NEW_TOKENS, PROMPT_FILE, FakeVLM
from fakevlm.pipelines.training.nodes import train_fakevlm

from .conftest import load_params, manifest_of


def test_detect_folder_reports_every_file_and_skips_bad_ones(saved_tiny_model, training_params, labelled_images,
                                                              tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    for i, image, _, _ in labelled_images[:3]:
        image.save(folder / "sub" / f"{i}.png")
    (folder / "broken.png").write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")

    status = main(["detect", str(folder), str(tmp_path / "missing.jpg"), "--model", str(saved_tiny_model),
                   "--json", "--batch-size", "2"])

    assert status == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in results] == [str(folder / "broken.png")] + [
        str(folder / "sub" / f"{i}.png") for i, *_ in labelled_images[:3]] + [str(tmp_path / "missing.jpg")]
    assert "error" in results[0] and "error" in results[-1]
    expected = FakeVLM.from_pretrained(saved_tiny_model).generate([im for _, im, _, _ in labelled_images[:3]], QUESTION,
                                                                  training_params["max_new_tokens"])
    for result, answer in zip(results[1:4], expected):
        assert result["explanation"] == answer and result["verdict"] == parse_verdict(answer)
        p = result["fake_probability"]
        assert (p is None) == (result["verdict"] is None) and (p is None or 0 <= p <= 1 and not math.isnan(p))


def test_detect_asks_what_training_saved_with_the_model(tmp_path, training_params, labelled_images, capsys):
    question = "Is this picture real or made by a generator?"
    trained, *_ = train_fakevlm(manifest_of(tmp_path, labelled_images),
                                {**training_params, "question": question, "max_new_tokens": 5})
    folder = tmp_path / "fakevlm"
    HFModelDataset(str(folder)).save(trained)   # as the training stage writes the model folder

    detector = load_detector(str(folder))
    assert (detector.question, detector.max_new_tokens) == (question, 5)
    labelled_images[1][1].save(tmp_path / "fake.png")
    capsys.readouterr()   # training's own output
    assert main(["detect", str(tmp_path / "fake.png"), "--model", str(folder), "--json"]) == 0
    [result] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert result["explanation"] == detector.fakevlm.generate([labelled_images[1][1]], question, 5)[0]


def test_a_folder_without_its_prompt_is_asked_fakeclues_question(saved_tiny_model):
    (saved_tiny_model / PROMPT_FILE).unlink()   # as in a published checkpoint, or a folder saved before the file
    detector = load_detector(str(saved_tiny_model))
    assert (detector.question, detector.max_new_tokens) == (QUESTION, FAKECLUE_MAX_NEW_TOKENS)


def test_registry_command_names_what_the_pipeline_names():
    """Its own copy (the command runs where conf/ is not), but the same names; only the wait differs."""
    conf = load_params("registry")
    assert {key: conf[key] for key in REGISTRY if key != "lock_wait_s"} == {
        key: value for key, value in REGISTRY.items() if key != "lock_wait_s"}


def test_registry_promote_and_rollback_from_the_command_line(mlflow_store, tmp_path, capsys):
    client = MlflowClient()
    client.create_registered_model("fakevlm")
    for _ in range(2):
        client.create_model_version("fakevlm", source=str(tmp_path))
    assert main(["registry", "promote", "1"]) == 0
    assert main(["registry", "promote", "2"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "model_name": "fakevlm", "champion": "2", "previous": "1", "action": "promote"}
    assert main(["registry", "rollback"]) == 0
    assert str(client.get_model_version_by_alias("fakevlm", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("fakevlm", "previous").version) == "2"


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "fakevlm.console", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "detect" in result.stdout and "registry" in result.stdout
