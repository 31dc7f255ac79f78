"""FakeVLM as an MLflow pyfunc: images in, verdict and explanation out.

The pyfunc wraps the `save_pretrained` folder as an artifact; MLflow's transformers flavour
refuses a LLaVA processor, and a pyfunc keeps the prompt identical to training.
"""

from __future__ import annotations

import base64
import io

import mlflow.pyfunc
import pandas as pd
from PIL import Image

from fakevlm.detector import Detector, answer_images, read_image
from fakevlm.model import FakeVLM


def encode_image(image: Image.Image) -> str:
    """PNG bytes, base64: the `image` column of the model's input."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


BATCH_SIZE = 16  # images per generation: a large input frame is answered in parts, bounding memory


class FakeVLMPyfunc(mlflow.pyfunc.PythonModel):
    """`predict(DataFrame[image: base64 PNG/JPEG])` -> DataFrame[verdict, fake_probability, explanation],
    as `fakevlm detect` answers (fake_probability NaN for an answer without a verdict)."""

    # a class default: a model pickled before calibration existed unpickles without its own
    temperature = 1.0

    def __init__(self, question: str, max_new_tokens: int, temperature: float = 1.0):
        self.question = question
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature   # evaluation's calibration of the fake probability
        self.fakevlm: FakeVLM | None = None

    def __getstate__(self) -> dict:
        # MLflow loads the model to infer the signature, then pickles this object: keep the
        # weights out of the pickle, they travel as the `hf_dir` artifact
        return {**self.__dict__, "fakevlm": None}

    def load_context(self, context) -> None:
        self.fakevlm = FakeVLM.from_pretrained(context.artifacts["hf_dir"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        images = [read_image(io.BytesIO(base64.b64decode(data))) for data in model_input["image"]]
        detector = Detector(self.fakevlm, self.question, self.max_new_tokens, self.temperature)
        answers = pd.DataFrame(answer_images(detector, images, BATCH_SIZE),
                               columns=["verdict", "fake_probability", "explanation"])
        return answers.astype({"fake_probability": float})  # a float column (NaN), whatever the batch's answers
