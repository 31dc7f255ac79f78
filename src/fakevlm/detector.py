"""The detector that `fakevlm detect`, `fakevlm serve` and the registry's pyfunc share: a trained
FakeVLM with the prompt it was trained on, loaded from the registry or a model folder, reading image
files and answering them as verdicts, fake probabilities and explanations.

Light to import (torch and MLflow are imported when a model is loaded): the command line reads it first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from PIL import Image

from fakevlm.formats import UNREADABLE_IMAGE
from fakevlm.metrics import apply_temperature, parse_verdict

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"    # conf/base/mlflow.yml's default


class Detector(NamedTuple):
    fakevlm: Any  # fakevlm.model.FakeVLM, imported only when a model is loaded (torch is slow to import)
    question: str
    max_new_tokens: int
    # evaluation's temperature scaling, which the registered model carries; 1: the raw probability
    temperature: float = 1.0


def use_tracking_store() -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI, else the project's store; returns that URI."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    mlflow.set_tracking_uri(uri)
    return uri


def load_detector(model: str) -> Detector:
    """The FakeVLM and its prompt from a registry URI (the pyfunc's) or a save_pretrained folder
    (the one saved beside its weights, FakeClue's when there is none)."""
    if Path(model).is_dir():
        from fakevlm.model import FakeVLM

        fakevlm = FakeVLM.from_pretrained(model)
        return Detector(fakevlm, fakevlm.question, fakevlm.max_new_tokens)
    import mlflow

    from fakevlm.registry import server_failures

    uri = use_tracking_store()
    with server_failures(uri, f"loading {model}"):
        wrapped = mlflow.pyfunc.load_model(model).unwrap_python_model()
    return Detector(wrapped.fakevlm, wrapped.question, wrapped.max_new_tokens, wrapped.temperature)


def read_image(source: Path | BinaryIO) -> Image.Image:
    with Image.open(source) as image:
        image.load()
        return image.convert("RGB")


def verdict(answer: str, probability: float, temperature: float) -> dict[str, Any]:
    """An answer as users get it: `verdict` (None when it names neither), `fake_probability`
    (calibrated by `temperature`; None when there is no verdict, else 4 digits) and the answer as
    `explanation`."""
    return {"verdict": parse_verdict(answer),
            "fake_probability": None if math.isnan(probability) else round(apply_temperature([probability], temperature)[0], 4),
            "explanation": answer}


def answer_images(detector: Detector, images: Sequence[Image.Image], batch_size: int) -> list[dict[str, Any]]:
    """Each image's `verdict`, in order."""
    answers, probabilities = detector.fakevlm.answer(images, detector.question, detector.max_new_tokens, batch_size)
    return [verdict(answer, probability, detector.temperature) for answer, probability in zip(answers, probabilities)]


def detect_files(detector: Detector, files: Sequence[tuple[str, Path | BinaryIO]], batch_size: int) -> list[dict]:
    """One result per (name, file), in order: `path` and its `verdict`, or `path` and `error` for a
    file that is not a readable image."""
    results: dict[int, dict[str, Any]] = {}
    readable = []
    for index, (name, file) in enumerate(files):
        try:
            readable.append((index, name, read_image(file)))
        except UNREADABLE_IMAGE as error:
            results[index] = {"path": name, "error": f"{type(error).__name__}: {error}"}
    if readable:
        answered = answer_images(detector, [image for *_, image in readable], batch_size)
        for (index, name, _), result in zip(readable, answered):
            results[index] = {"path": name, **result}
    return [results[index] for index in range(len(files))]
