"""The LLaVA-1.5-shaped checkpoint made locally has llava-hf/llava-1.5-7b-hf's layout."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fakevlm.llava15 import build, corpus_from
from fakevlm.model import FakeVLM, build_prompt

from .conftest import PROJECT_ROOT, QUESTION

# llava-hf/llava-1.5-7b-hf's config.json as published on the hub (transformers 4.36 wrote it).
LLAVA_15_7B_CONFIG = {
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 32000,
    "model_type": "llava",
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {
        "_name_or_path": "lmsys/vicuna-7b-v1.5",
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.36.0.dev0",
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}
# Keys of that file transformers 5 no longer writes (or renames: torch_dtype -> dtype); it reads them all.
NOT_WRITTEN_BY_TRANSFORMERS_5 = {"ignore_index", "torch_dtype", "vocab_size", "_name_or_path"}
# The size of the network: narrower and shallower here by design.
SIZE_KEYS = {"hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "projection_dim"}
VERSION_KEYS = {"transformers_version"}
# its special tokens: Llama's <unk> <s> </s>, then the two llava-hf added
LLAVA_15_7B_TOKENS = {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<pad>": 32001, "<0x0A>": 13}
LLAVA_15_7B_PROCESSOR = {"patch_size": 14, "vision_feature_select_strategy": "default",
                         "num_additional_image_tokens": 1, "image_token": "<image>"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    params = yaml.safe_load((PROJECT_ROOT / "conf/smoke/gpu_smoke.yml").read_text())["llava15"]
    files = [PROJECT_ROOT / path for path in params["corpus_files"]]
    folder = tmp_path_factory.mktemp("llava15") / "model"
    build(params, corpus_from(files, params["question"])).save_pretrained(folder)
    return folder


def compare(published: dict, ours: dict, where: str = "") -> None:
    for key, value in published.items():
        if key in NOT_WRITTEN_BY_TRANSFORMERS_5:
            continue
        assert key in ours, f"{where}{key} missing"
        if isinstance(value, dict):
            compare(value, ours[key], f"{where}{key}.")
        elif key not in SIZE_KEYS | VERSION_KEYS:
            assert ours[key] == value, f"{where}{key}: {ours[key]!r} != {value!r}"


def test_config_has_the_7b_checkpoints_fields_and_values(checkpoint):
    ours = json.loads((checkpoint / "config.json").read_text())
    compare(LLAVA_15_7B_CONFIG, ours)
    # narrower and shallower, and at least the two layers that vision_feature_layer -2 needs
    assert ours["text_config"]["hidden_size"] < 4096 and ours["vision_config"]["num_hidden_layers"] >= 2


# llava-hf's chat template (chat_template.json of llava-hf/llava-1.5-7b-hf), which FakeVLM trained with
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def test_tokenizer_and_processor_are_llava_hf_s(checkpoint):
    processor = AutoProcessor.from_pretrained(checkpoint)
    tokenizer = processor.tokenizer
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in LLAVA_15_7B_TOKENS} == LLAVA_15_7B_TOKENS
    assert json.loads((checkpoint / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    assert tokenizer.decode(tokenizer("naïve 🙂", add_special_tokens=False)["input_ids"]) == "naïve 🙂"  # byte fallback
    assert tokenizer("fake")["input_ids"][0] == tokenizer.bos_token_id
    saved = json.loads((checkpoint / "processor_config.json").read_text())
    assert {k: saved[k] for k in LLAVA_15_7B_PROCESSOR} == LLAVA_15_7B_PROCESSOR
    image = saved["image_processor"]
    assert (image["size"], image["crop_size"], image["resample"]) == (
        {"shortest_edge": 336}, {"height": 336, "width": 336}, 3)
    # the prompt evaluation and training build (model.build_prompt): FakeVLM's, through llava-hf's template
    assert processor.chat_template == LLAVA_HF_CHAT_TEMPLATE
    prompt = build_prompt(processor, QUESTION)
    assert prompt == "USER: <image>\nDoes the image looks real/fake? ASSISTANT:"
    ids = processor(images=Image.new("RGB", (500, 375)), text=prompt, return_tensors="pt")["input_ids"][0]
    assert int((ids == 32000).sum()) == 576


def test_loads_as_llava_and_answers(checkpoint):
    fakevlm = FakeVLM.from_pretrained(checkpoint)
    assert isinstance(fakevlm.model, LlavaForConditionalGeneration)
    answers, probabilities = fakevlm.answer([Image.new("RGB", (336, 336), "gray")] * 2, QUESTION, max_new_tokens=3)
    assert len(answers) == len(probabilities) == 2 and answers[0] == answers[1]


# What vLLM's LLaVA path reads from a model folder (vllm/model_executor/models/llava.py and its
# multimodal processor): the architecture it dispatches on, a CLIP vision config, the feature
# layer and strategy, the image token id, the processor (transformers-4 file names: vLLM pins
# transformers 4) and a chat template that puts one "<image>" where the image goes.
VLLM_LLAVA_ARCHITECTURES = ["LlavaForConditionalGeneration"]
VLLM_VISION_MODEL_TYPES = {"clip_vision_model", "siglip_vision_model", "pixtral"}


def test_folder_has_what_vllm_s_llava_path_reads(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["architectures"] == VLLM_LLAVA_ARCHITECTURES and config["model_type"] == "llava"
    assert config["vision_config"]["model_type"] in VLLM_VISION_MODEL_TYPES
    assert config["vision_feature_select_strategy"] in {"default", "full"}
    assert isinstance(config["vision_feature_layer"], int)
    preprocessor = json.loads((checkpoint / "preprocessor_config.json").read_text())
    assert preprocessor["image_processor_type"] == "CLIPImageProcessor" and preprocessor["crop_size"]["height"] == 336
    template = json.loads((checkpoint / "chat_template.json").read_text())["chat_template"]
    processor = AutoProcessor.from_pretrained(checkpoint)
    assert template == processor.chat_template
    # the OpenAI-style request vLLM turns into the template's messages: one image part, one text part
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.count("<image>") == 1   # FakeVLM issue #15/#18: "Expected 1 prompt placeholders ... found 0"
    tokenizer = processor.tokenizer
    assert tokenizer("<image>", add_special_tokens=False)["input_ids"] == [config["image_token_index"]]
    assert tokenizer(prompt)["input_ids"].count(config["image_token_index"]) == 1
    # (336 / 14)^2 = 576 placeholders once expanded, which is what vLLM allots per image
    assert config["image_seq_length"] == (config["vision_config"]["image_size"] // config["vision_config"]["patch_size"]) ** 2
