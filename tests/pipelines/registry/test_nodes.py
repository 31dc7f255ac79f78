import json
import math

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from fakevlm.detector import detect_files, load_detector
from fakevlm.metrics import apply_temperature, flatten_metrics
from fakevlm.model import FakeVLM
from fakevlm.pipelines.evaluation.nodes import compute_metrics, predict
from fakevlm.pipelines.registry.nodes import register_model
from fakevlm.registry import rollback
from fakevlm.serving import encode_image

from ...conftest import QUESTION, load_params


def metrics_with(accuracy, f1=0.5, doc=0.5):
    return {"fakeclue_mini_test": {"n": 10, "accuracy": accuracy, "f1": f1, "rouge_l": 0.4, "css": 0.6, "ece": 0.1,
                                   "per_category": {"doc": {"accuracy": doc}},
                                   "baseline_cnn": {"accuracy": 0.99}}}


def aliases(client, name="fakevlm"):
    return {alias: str(client.get_model_version_by_alias(name, alias).version)
            for alias in ("champion", "challenger", "previous")
            if alias in client.get_registered_model(name).aliases}


def registrar(model_dir, labelled_images, tmp_path, name="fakevlm"):
    """register(metrics, data=manifest): the registry node on the tiny model and a one-image split,
    registering model `name`."""
    params = {**load_params("registry"), "model_name": name}
    image_path = tmp_path / "example.png"
    labelled_images[0][1].save(image_path)
    manifest = pd.DataFrame({"id": ["a"], "image_path": [str(image_path)], "sha256": ["00"], "label": ["fake"],
                             "split": ["test"], "category": ["doc"], "artifact_family": ["glyph_garble"],
                             "artifact_region": ["a line of text in the middle"], "explained": [True],
                             "answer": ["This is a fake image. In the text line the glyphs are garbled."]})
    model = FakeVLM.from_pretrained(model_dir)

    def run(metrics, data=manifest):
        return register_model(model, metrics, data, params, load_params("evaluation"), "# card\n")

    run.model, run.params, run.manifest = model, params, manifest
    return run


@pytest.fixture
def register(saved_tiny_model, mlflow_store, labelled_images, tmp_path):
    return registrar(saved_tiny_model, labelled_images, tmp_path)


def test_promotion_gate_promotes_better_refuses_worse_and_rolls_back(register, labelled_images):
    client = MlflowClient()
    first = register(metrics_with(0.8))
    assert first["promoted"] and first["version"] == "1" and first["reason"] == "no champion yet"
    assert aliases(client) == {"champion": "1", "challenger": "1"}

    worse = register(metrics_with(0.7))
    assert not worse["promoted"] and worse["version"] == "2"
    assert "accuracy 0.7000 does not beat the champion's 0.8000" in worse["reason"]
    assert aliases(client) == {"champion": "1", "challenger": "2"}   # nothing moved but the challenger

    equal = register(metrics_with(0.8))
    assert not equal["promoted"], "an equal model does not beat the champion"

    regressing = register(metrics_with(0.9, f1=0.3, doc=0.2))
    assert not regressing["promoted"]
    assert "f1 0.3000 is worse" in regressing["reason"] and "per_category.doc.accuracy 0.2000 is worse" in regressing["reason"]

    better = register(metrics_with(0.9))
    assert better["promoted"] and better["version"] == "5"
    assert aliases(client) == {"champion": "5", "challenger": "5", "previous": "1"}
    assert better["previous_champion"]["version"] == "1"
    assert better["previous_champion"]["metrics"]["accuracy"] == pytest.approx(0.8)
    assert "baseline_cnn.accuracy" not in better["metrics"]
    # the record is logged to the run it was made in
    logged = mlflow.artifacts.load_dict(f"runs:/{better['run_id']}/registry_decision.json")
    assert logged["version"] == "5" and logged["data_hash"] == better["data_hash"]

    back = rollback(client, "fakevlm", register.params)
    assert back == {"model_name": "fakevlm", "champion": "1", "previous": "5", "action": "rollback"}
    assert aliases(client)["champion"] == "1" and aliases(client)["previous"] == "5"

    # the served pyfunc answers like the model it wraps
    served = mlflow.pyfunc.load_model("models:/fakevlm@champion")
    out = served.predict(pd.DataFrame({"image": [encode_image(labelled_images[1][1])]}))
    expected = register.model.generate([labelled_images[1][1]], QUESTION, register.model.max_new_tokens)[0]
    assert out["explanation"].tolist() == [expected]
    json.dumps(better)


def test_the_registered_pyfunc_answers_as_fakevlm_detect_on_the_model_folder(register, labelled_images, tmp_path):
    register(metrics_with(0.8))
    paths = []
    for image_id, image, *_ in labelled_images[:4]:
        image.save(tmp_path / f"{image_id}.png")
        paths.append(tmp_path / f"{image_id}.png")
    detected = detect_files(load_detector(register.model.source_dir), [(p.name, p) for p in paths], batch_size=16)
    served = mlflow.pyfunc.load_model("models:/fakevlm@champion").predict(
        pd.DataFrame({"image": [encode_image(image) for _, image, *_ in labelled_images[:4]]}))
    assert served["explanation"].tolist() == [r["explanation"] for r in detected]
    assert served["verdict"].tolist() == [r["verdict"] for r in detected]
    assert served["fake_probability"].tolist() == pytest.approx(
        [math.nan if r["fake_probability"] is None else r["fake_probability"] for r in detected], nan_ok=True)


def test_a_champion_scored_on_other_data_is_scored_again_on_this_data(register):
    register(metrics_with(0.5))
    changed = register.manifest.assign(answer=["This is a fake image. The seam runs along the left edge."])
    # what the evaluation stage would measure for the champion on the changed split
    on_split = {**load_params("evaluation"), "benchmarks": {"test": "fakeclue_mini_test"}}
    champion = flatten_metrics(compute_metrics(predict(register.model, changed, on_split, QUESTION))["fakeclue_mini_test"])
    assert champion["rouge_l"] != pytest.approx(0.4)    # not the metrics it was registered with

    challenger = metrics_with(champion["accuracy"] + 0.1)
    challenger["fakeclue_mini_test"].update(rouge_l=champion["rouge_l"], css=champion["css"], f1=champion["f1"],
                                            ece=champion["ece"], per_category={})
    decision = register(challenger, changed)

    assert decision["previous_champion"]["rescored"] and decision["previous_champion"]["version"] == "1"
    assert decision["previous_champion"]["metrics"] == pytest.approx(champion, nan_ok=True)
    assert decision["promoted"], decision["reason"]
    same_data = register(challenger, changed)
    assert not same_data["previous_champion"]["rescored"]   # v2 was registered on this data


def test_the_gate_works_against_a_real_mlflow_server(saved_tiny_model, mlflow_server, labelled_images, tmp_path):
    register = registrar(saved_tiny_model, labelled_images, tmp_path)
    client = MlflowClient()
    assert client._registry_uri.startswith("http://127.0.0.1:")
    assert register(metrics_with(0.8))["promoted"]
    assert not register(metrics_with(0.7))["promoted"]
    assert register(metrics_with(0.9))["promoted"]
    assert aliases(client) == {"champion": "3", "challenger": "3", "previous": "1"}
    rollback(client, "fakevlm", register.params)
    assert aliases(client)["champion"] == "1"
    # the model's files went through the server's artifact proxy and come back whole
    served = mlflow.pyfunc.load_model("models:/fakevlm@champion")
    out = served.predict(pd.DataFrame({"image": [encode_image(labelled_images[1][1])]}))
    assert out["explanation"].tolist() == register.model.generate([labelled_images[1][1]], QUESTION,
                                                                   register.model.max_new_tokens)


def test_the_registered_model_carries_evaluations_temperature(register, labelled_images, tmp_path):
    calibrated = metrics_with(0.8)
    calibrated["fakeclue_mini_test"]["calibrated"] = {"temperature": 3.0, "ece": 0.05}
    register(calibrated)
    champion = load_detector("models:/fakevlm@champion")
    assert champion.temperature == 3.0 and load_detector(register.model.source_dir).temperature == 1.0
    paths = []
    for image_id, image, *_ in labelled_images[:4]:
        image.save(tmp_path / f"{image_id}.png")
        paths.append((image_id, tmp_path / f"{image_id}.png"))
    raw = register.model.answer([image for _, image, *_ in labelled_images[:4]], champion.question,
                                champion.max_new_tokens)[1]
    served = [result["fake_probability"] for result in detect_files(champion, paths, batch_size=16)]
    expected = [None if math.isnan(p) else round(q, 4) for p, q in zip(raw, apply_temperature(raw, 3.0))]
    assert served == expected
