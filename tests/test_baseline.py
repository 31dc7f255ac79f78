"""The CNN baseline: learns a visible cue, is seeded, and round-trips through safetensors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fakevlm.baseline import CNNDetector, train_cnn
from fakevlm.datasets import HFModelDataset
from fakevlm.pipelines.training.nodes import train_baseline


CONFIG = {"width": 8, "image_size": 32, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
TRAIN = {"seed": 0, "max_steps": 30, "batch_size": 16, "learning_rate": 3e-3, "weight_decay": 0.0,
         "warmup_ratio": 0.05, "logging_steps": 10}


def trained(labelled_images) -> tuple[CNNDetector, list[dict]]:
    torch.manual_seed(0)
    model = CNNDetector(CONFIG)
    history = train_cnn(model, [im for _, im, _, _ in labelled_images], [lab for _, _, lab, _ in labelled_images], TRAIN)
    return model, history


def test_learns_the_checkerboard_and_is_seeded(labelled_images):
    model, history = trained(labelled_images)
    probabilities = model.fake_probability([im for _, im, _, _ in labelled_images])
    predicted = ["fake" if p >= 0.5 else "real" for p in probabilities]
    assert predicted == [label for _, _, label, _ in labelled_images]
    assert [h["step"] for h in history] == [10, 20, 30] and history[-1]["loss"] < 0.1
    again, _ = trained(labelled_images)
    assert again.fake_probability([labelled_images[0][1]]) == pytest.approx(model.fake_probability([labelled_images[0][1]]))


def test_saved_and_loaded_by_the_catalog_dataset(labelled_images, tmp_path):
    model, _ = trained(labelled_images)
    dataset = HFModelDataset(path=str(tmp_path / "cnn"), model_class="fakevlm.baseline.CNNDetector")
    dataset.save(model)
    assert (tmp_path / "cnn" / "model.safetensors").is_file()
    loaded = dataset.load()
    images = [im for _, im, _, _ in labelled_images]
    assert loaded.fake_probability(images) == pytest.approx(model.fake_probability(images))


def test_node_trains_on_the_training_split_only(labelled_images, tmp_path):
    rows = []
    for i, image, label, answer in labelled_images:
        image.save(tmp_path / f"{i}.png")
        rows.append({"id": i, "image_path": str(tmp_path / f"{i}.png"), "label": label, "answer": answer,
                     "split": "test" if i.endswith("0") else "train"})
    baseline = {"model": CONFIG, "train": dict(TRAIN, max_steps=4, logging_steps=2)}
    model, history, mlflow_metrics = train_baseline(pd.DataFrame(rows), baseline, "train")
    assert history["n_samples"] == 14 and history["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert [h["step"] for h in history["log"]] == [2, 4]
    # the wall clock goes to MLflow only: the history DVC hashes is the same on every run
    assert not any("seconds" in h for h in history["log"])
    assert [p["step"] for p in mlflow_metrics["train.seconds"]] == [2, 4]
    assert all(p["value"] > 0 for p in mlflow_metrics["train.seconds"])


def test_default_baseline_config_builds():
    from omegaconf import OmegaConf

    from .conftest import PROJECT_ROOT

    params = OmegaConf.to_container(OmegaConf.load(PROJECT_ROOT / "conf/base/parameters_training.yml"))["baseline"]
    model = CNNDetector(params["model"])
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_imagenet_mobilenet_baseline_starts_from_imagenet_and_learns(labelled_images, tmp_path):
    from fakevlm.model import mobilenet_v2_imagenet_weights

    rows = []
    for i, image, label, answer in labelled_images:
        image.save(tmp_path / f"{i}.png")
        rows.append({"id": i, "image_path": str(tmp_path / f"{i}.png"), "label": label, "answer": answer, "split": "train"})
    config = dict(CONFIG, architecture="mobilenet_v2", weights="imagenet", image_size=64,
                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    untrained = CNNDetector(config)
    untrained.start_from("imagenet")
    imagenet = mobilenet_v2_imagenet_weights()
    assert all(torch.equal(untrained.features.body.state_dict()[k], v) for k, v in imagenet.items())
    model, _, _ = train_baseline(pd.DataFrame(rows), {"model": config, "train": TRAIN}, "train")
    images = [im for _, im, _, _ in labelled_images]
    predicted = ["fake" if p >= 0.5 else "real" for p in model.fake_probability(images)]
    assert predicted == [label for _, _, label, _ in labelled_images]
    # transformers builds its batch norms with TensorFlow's decay as momentum: the last batch's statistics
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    dataset = HFModelDataset(path=str(tmp_path / "cnn"), model_class="fakevlm.baseline.CNNDetector")
    dataset.save(model)
    assert dataset.load().fake_probability(images) == pytest.approx(model.fake_probability(images))
    with pytest.raises(ValueError, match="only mobilenet_v2 has pretrained weights"):
        CNNDetector(CONFIG).start_from("imagenet")
