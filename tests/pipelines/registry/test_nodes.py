import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from fakevlm.model import FakeVLM
from fakevlm.pipelines.registry.nodes import register_model
from fakevlm.serving import encode_image

from ...conftest import QUESTION, load_params


def metrics_with(accuracy):
    return {"fakeclue_mini_test": {"n": 10, "accuracy": accuracy, "f1": 0.5, "rouge_l": 0.4, "css": 0.6, "per_category": {}}}


def test_first_model_becomes_champion_worse_one_does_not(saved_tiny_model, mlflow_store, labelled_images, tmp_path):
    params = load_params("registry")
    image_path = tmp_path / "example.png"
    labelled_images[0][1].save(image_path)
    manifest = pd.DataFrame({"image_path": [str(image_path)]})
    model = FakeVLM.from_pretrained(saved_tiny_model)

    first = register_model(model, metrics_with(0.8), manifest, params, QUESTION)
    assert first["promoted"] and first["version"] == "1" and first["reason"] == "no champion yet"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("fakevlm", "champion").version) == "1"

    worse = register_model(model, metrics_with(0.7), manifest, params, QUESTION)
    assert not worse["promoted"] and worse["version"] == "2"
    assert "0.7000 < champion v1's 0.8000" in worse["reason"]
    assert str(client.get_model_version_by_alias("fakevlm", "champion").version) == "1"

    equal = register_model(model, metrics_with(0.8), manifest, params, QUESTION)
    assert equal["promoted"] and str(client.get_model_version_by_alias("fakevlm", "champion").version) == "3"
    assert equal["previous_champion"]["metrics"]["accuracy"] == pytest.approx(0.8)

    # the registered pyfunc answers like the model it wraps
    served = mlflow.pyfunc.load_model("models:/fakevlm@champion")
    out = served.predict(pd.DataFrame({"image": [encode_image(labelled_images[1][1])]}))
    expected = model.generate([labelled_images[1][1]], QUESTION, params["max_new_tokens"])[0]
    assert out["explanation"].tolist() == [expected]
    assert out["verdict"].iloc[0] in ("real", "fake", None)
