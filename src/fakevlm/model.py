"""The FakeVLM model: a LLaVA (vision tower -> projector -> language model) that answers
"Does the image looks real/fake?" with a verdict sentence and the artifacts it sees.

One place for everything model-shaped: the tiny model built from config, the tokenizer trained
offline, the processor, loading a real checkpoint, the prompt (shared by training and evaluation)
and generation.
"""

from __future__ import annotations

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
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]


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
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=params["vision"]["patch_size"],
        vision_feature_select_strategy="default",
        # CLIP prepends a CLS token that "default" drops: (size / patch)^2 image tokens remain
        num_additional_image_tokens=1,
        chat_template=params["chat_template"],
    )


def build_tiny_model(processor: LlavaProcessor, params: dict[str, Any]) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA sized by `params` (vision, text), for training from scratch."""
    tokenizer = processor.tokenizer
    vision = params["vision"]
    text = params["text"]
    vision_config = CLIPVisionConfig(
        image_size=params["image_size"],
        patch_size=vision["patch_size"],
        hidden_size=vision["hidden_size"],
        intermediate_size=vision["intermediate_size"],
        num_hidden_layers=vision["num_layers"],
        num_attention_heads=vision["num_heads"],
        projection_dim=vision["hidden_size"],
    )
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
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(params["image_size"] // vision["patch_size"]) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=vision["feature_layer"],
        projector_hidden_act="gelu",
    )
    torch.manual_seed(params["seed"])
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


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
def dct_patch_init(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> None:
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


def load_pretrained(path: str, dtype: str = "float32") -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Load a LLaVA checkpoint in Hugging Face format (a hub id or a local folder).

    Remote code is never executed and weights are read from safetensors when the folder has them.
    """
    model = LlavaForConditionalGeneration.from_pretrained(
        path, dtype=getattr(torch, dtype), trust_remote_code=False, use_safetensors=None
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

    model: LlavaForConditionalGeneration
    processor: LlavaProcessor
    source_dir: str | None = None

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path, safe_serialization=True)
        self.processor.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> FakeVLM:
        model, processor = load_pretrained(str(path))
        model.eval()
        return cls(model=model, processor=processor, source_dir=str(path))

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
            inputs = self.processor(
                images=batch, text=[prompt] * len(batch), return_tensors="pt", padding=True
            )
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
