"""A LLaVA-1.5-shaped checkpoint made on this machine: `llava-hf/llava-1.5-7b-hf`'s layout (the
format of FakeVLM's released weights), only narrower and shallower, with random weights.

Field for field what the 7B folder holds: `model_type: llava`, a CLIP vision tower at 336 px with
14-px patches (576 image tokens, CLS dropped, features from layer -2), the 2-layer GELU projector,
a Llama language model with Vicuna's 32000-piece vocabulary padded to 32064 embedding rows,
`<image>` = 32000 and `<pad>` = 32001, a Llama tokenizer with byte fallback, OpenAI CLIP's image
processor and llava-hf's chat template. Nothing is downloaded: the tokenizer's pieces are learnt
here from the words fakevlm's annotators write. What runs on this checkpoint runs on FakeVLM's.
`python -m fakevlm.smoke` (make gpu-smoke) writes it, sized by conf/smoke/gpu_smoke.yml.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPVisionConfig, LlamaConfig, LlamaTokenizer, LlavaConfig, LlavaForConditionalGeneration

from fakevlm.model import IMAGE_TOKEN, FakeVLM, build_processor

LLAMA_SPECIAL = ["<unk>", "<s>", "</s>"]       # ids 0, 1, 2, as in Llama's SentencePiece model
LLAMA_VOCAB = 32000                            # Llama/Vicuna pieces; <image> and <pad> follow
PAD_TOKEN = "<pad>"
EMBEDDING_ROWS = 32064                         # llava-hf pads the embeddings to a multiple of 64
BYTE_PIECES = [f"<0x{byte:02X}>" for byte in range(256)]   # byte fallback: ids 3..258, as Llama's
# llava-hf's chat template (its chat_template.json): images first, then the text, "ASSISTANT:" to answer
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]   # OpenAI CLIP's, as llava-hf's preprocessor_config.json
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def llama_tokenizer(corpus: Iterable[str]) -> LlamaTokenizer:
    """A Llama tokenizer (SentencePiece-style BPE on "▁"-joined words, byte fallback, <s> first)
    whose 32000 pieces sit where Llama's do: <unk> <s> </s>, the 256 byte pieces, the BPE pieces
    learnt from `corpus`, then unused pieces up to 32000; `<image>` (32000) and `<pad>` (32001) after.
    """
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    budget = LLAMA_VOCAB - len(LLAMA_SPECIAL) - len(BYTE_PIECES)
    # sorted: the pieces (and so the saved tokenizer) must not depend on the corpus's order
    learner.train_from_iterator(sorted(set(corpus)), trainers.BpeTrainer(vocab_size=budget, show_progress=False))
    learnt = json.loads(learner.to_str())["model"]
    pieces = [piece for piece, _ in sorted(learnt["vocab"].items(), key=lambda item: item[1])]
    vocab = {token: index for index, token in enumerate([*LLAMA_SPECIAL, *BYTE_PIECES, *pieces])}
    # a small corpus yields a few thousand pieces; the rest stay unused so that the ids match Llama's
    for filler in range(LLAMA_VOCAB - len(vocab)):
        vocab[f"<unused{filler}>"] = len(vocab)
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in learnt["merges"]]
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, legacy=False, add_bos_token=True, add_eos_token=False,
                               padding_side="left")
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": AddedToken(PAD_TOKEN, special=True, normalized=False)})
    tokenizer.image_token = IMAGE_TOKEN
    return tokenizer


def build(params: dict[str, Any], corpus: Iterable[str]) -> FakeVLM:
    """The model and processor, sized by `params` (`vision`, `text`, `seed`), random weights."""
    tokenizer = llama_tokenizer(corpus)
    image_id, pad_id = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, PAD_TOKEN])
    if (image_id, pad_id) != (LLAMA_VOCAB, LLAMA_VOCAB + 1):
        raise AssertionError(f"<image> {image_id} and <pad> {pad_id}: expected {LLAMA_VOCAB}, {LLAMA_VOCAB + 1}")
    image_size, patch_size = 336, 14
    processor = build_processor(tokenizer, {
        "image_size": image_size, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "vision": {"tower": "clip", "patch_size": patch_size}, "chat_template": LLAVA_HF_CHAT_TEMPLATE,
    })
    vision, text = params["vision"], params["text"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision["hidden_size"], intermediate_size=vision["intermediate_size"],
            num_hidden_layers=vision["num_layers"], num_attention_heads=vision["num_heads"],
            projection_dim=vision["projection_dim"], image_size=image_size, patch_size=patch_size,
            hidden_act="quick_gelu", layer_norm_eps=1e-5,
        ),
        text_config=LlamaConfig(
            vocab_size=EMBEDDING_ROWS, hidden_size=text["hidden_size"], intermediate_size=text["intermediate_size"],
            num_hidden_layers=text["num_layers"], num_attention_heads=text["num_heads"],
            num_key_value_heads=text["num_heads"], max_position_embeddings=4096, rms_norm_eps=1e-5,
            hidden_act="silu", bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad_id, tie_word_embeddings=False,
        ),
        image_token_index=image_id,
        image_seq_length=(image_size // patch_size) ** 2,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    config.text_config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(params["seed"])
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return FakeVLM(model, processor)


def annotator_words(params: Any) -> list[str]:
    """Every string in the annotation parameters: the words the answers will be made of."""
    if isinstance(params, str):
        return [params]
    if isinstance(params, dict):
        return [text for value in params.values() for text in annotator_words(value)]
    if isinstance(params, list):
        return [text for value in params for text in annotator_words(value)]
    return []


def corpus_from(files: Sequence[str | Path], question: str) -> list[str]:
    """The tokenizer's corpus: the chat template's words, the question, both verdict sentences and
    the annotation texts."""
    texts = ["USER: ASSISTANT:", question, "This is a fake image.", "This is a real image."]
    for path in files:
        texts += annotator_words(yaml.safe_load(Path(path).read_text()))
    return texts


