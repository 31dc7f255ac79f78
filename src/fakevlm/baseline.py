"""The expert baseline: a CNN real/fake classifier trained on the same split as FakeVLM.

FakeVLM claims to match expert detectors without a separate classifier; this is the classifier it
is compared with. `architecture: mobilenet_v2` is the ImageNet MobileNetV2 that the default
FakeVLM uses as its vision tower, with a linear head instead of a language model (the fair
comparison: the same pretrained eyes); `resnet` is a small ResNet-style network from random init
whose stem keeps full resolution (no stride, no pooling), because the artifacts live in the
highest frequencies.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import MobileNetV2Model, get_cosine_schedule_with_warmup

from fakevlm.metrics import CLASSES as LABELS   # class index -> label: ("real", "fake")
from fakevlm.model import keep_running_statistics, mobilenet_v2_config, start_mobilenet_v2

log = logging.getLogger(__name__)


class ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


class ResNetFeatures(nn.Module):
    """Stem and four residual stages (the last three halve the resolution): a feature map."""

    def __init__(self, width: int):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stages = nn.Sequential(*[ResidualBlock(cin, cout, 1 if i == 0 else 2)
                                      for i, (cin, cout) in enumerate(zip([width, *widths[:-1]], widths))])
        self.width = widths[-1]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(pixels))


class MobileNetV2Features(nn.Module):
    """transformers' MobileNetV2 (torchvision's layout): its last feature map, 1280 channels."""

    def __init__(self, image_size: int):
        super().__init__()
        self.body = MobileNetV2Model(mobilenet_v2_config(image_size), add_pooling_layer=False)
        self.width = self.body.config.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.body(pixels).last_hidden_state


class CNNDetector(nn.Module):
    """A convolutional feature map (`architecture`), mean-pooled, and a linear real/fake head."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        architecture = config.get("architecture", "resnet")
        if architecture == "mobilenet_v2":
            self.features = MobileNetV2Features(config["image_size"])
        elif architecture == "resnet":
            self.features = ResNetFeatures(config["width"])
        else:
            raise ValueError(f"baseline.model.architecture: {architecture!r}; expected mobilenet_v2 or resnet")
        self.head = nn.Linear(self.features.width, len(LABELS))

    def start_from(self, weights: str | None) -> None:
        """Starting weights for the features (`imagenet`: MobileNetV2 only); the head stays random."""
        if isinstance(self.features, MobileNetV2Features):
            start_mobilenet_v2(self.features.body, weights)
        elif weights is not None:
            raise ValueError(f"baseline.model.weights: {weights!r}; only mobilenet_v2 has pretrained weights")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels).mean(dim=(2, 3)))

    def to_pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images -> normalised (N, 3, size, size); resized only if they are not that size."""
        size = self.config["image_size"]
        arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC) if im.size != (size, size)
                             else im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        mean, std = (torch.tensor(self.config[k]).view(1, 3, 1, 1) for k in ("image_mean", "image_std"))
        return (pixels - mean) / std

    @torch.no_grad()
    def fake_probability(self, images: Sequence[Image.Image], batch_size: int = 64) -> list[float]:
        self.eval()
        probabilities: list[float] = []
        for start in range(0, len(images), batch_size):
            logits = self(self.to_pixels(images[start : start + batch_size]))
            probabilities += logits.softmax(dim=-1)[:, LABELS.index("fake")].tolist()
        return probabilities

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> CNNDetector:
        path = Path(path)
        model = cls(json.loads((path / "config.json").read_text()))
        model.load_state_dict(load_file(path / "model.safetensors"))
        return model.eval()


def train_cnn(
    model: CNNDetector, images: Sequence[Image.Image], labels: Sequence[str], params: dict[str, Any]
) -> list[dict[str, float]]:
    """Train `model` in place: AdamW, cosine schedule, random horizontal flips; returns the log."""
    torch.manual_seed(params["seed"])
    generator = torch.Generator().manual_seed(params["seed"])
    pixels = model.to_pixels(images)
    targets = torch.tensor([LABELS.index(label) for label in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"])
    steps, batch_size = params["max_steps"], params["batch_size"]
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(params["warmup_ratio"] * steps), steps)
    history: list[dict[str, float]] = []
    keep_running_statistics(model)
    model.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(pixels), (batch_size,), generator=generator)
        batch = pixels[index]
        # a mirror keeps every pixel-level artifact; it only changes where things are
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        loss = F.cross_entropy(model(batch), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % params["logging_steps"] == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), "learning_rate": schedule.get_last_lr()[0],
                            "seconds": time.perf_counter() - start})
            log.info("baseline step %d/%d  loss %.4f", step, steps, loss.item())
    model.eval()
    return history
