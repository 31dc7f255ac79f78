"""How a picture larger than the model's input is judged: two rules measured on the in-the-wild split.

    .venv/bin/python bench/image_rule.py [--model data/06_models/fakevlm] [--tile 64]

`resize`: the whole picture resized to the model's input by its image processor (what evaluation,
`fakevlm detect` and `fakevlm serve` do today). `tiles`: non-overlapping native-resolution tiles of
`--tile` px, each judged, the image's fake probability their mean. Prints ROC-AUC, balanced
accuracy, fake and real recall per rule, and the seconds each took (their ratio against resize).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from omegaconf import OmegaConf
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from fakevlm import in_the_wild
from fakevlm.model import FakeVLM


def tiles(image: Image.Image, side: int) -> list[Image.Image]:
    return [image.crop((x, y, x + side, y + side))
            for y in range(0, image.height - side + 1, side) for x in range(0, image.width - side + 1, side)]


def fake_probability(model: FakeVLM, images: list[Image.Image], question: str) -> np.ndarray:
    # the verdict is the answer's fourth token ("This is a real/fake"): a few tokens are enough
    return np.array(model.answer(images, question, max_new_tokens=6, batch_size=32)[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="data/06_models/fakevlm")
    parser.add_argument("--tile", type=int, default=64)
    args = parser.parse_args()
    ingestion = OmegaConf.to_container(OmegaConf.load("conf/base/parameters_ingestion.yml"), resolve=True)["ingestion"]
    question = OmegaConf.load("conf/base/parameters_training.yml")["training"]["question"]
    split = in_the_wild.build(ingestion["fakeclue_mini"]["wild"], ingestion["fakeclue_mini"]["seed"])
    images = [split["images"][r["image"]] for r in split["records"]]
    is_fake = np.array([r["label"] == 0 for r in split["records"]])
    model = FakeVLM.from_pretrained(args.model)
    results = {}
    start = time.perf_counter()
    results["resize"] = (fake_probability(model, images, question), time.perf_counter() - start)
    start = time.perf_counter()
    per_image = [tiles(image, args.tile) for image in images]
    flat = fake_probability(model, [t for group in per_image for t in group], question)
    bounds = np.cumsum([0] + [len(group) for group in per_image])
    results["tiles"] = (np.array([np.nanmean(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]),
                        time.perf_counter() - start)
    base = results["resize"][1]
    for rule, (probability, seconds) in results.items():
        probability = np.nan_to_num(probability, nan=0.5)
        verdict = probability >= 0.5
        print(f"{rule:7s} ROC-AUC {roc_auc_score(is_fake, probability):.3f}  "
              f"balanced acc. {balanced_accuracy_score(is_fake, verdict):.3f}  "
              f"fake recall {verdict[is_fake].mean():.3f}  real recall {(~verdict[~is_fake]).mean():.3f}  "
              f"{seconds:.1f} s ({seconds / base:.1f}x resize)  n={len(is_fake)}")


if __name__ == "__main__":
    main()
