import json
from pathlib import Path

import pytest
import torch
import transformers.training_args as hf_training_args
from omegaconf import OmegaConf

from transformers import LlavaForConditionalGeneration, TrainingArguments

from fakevlm.model import FakeVLM, build_processor, build_tiny_model, train_tokenizer
from fakevlm.training import Example, remove_checkpoints, train

from .conftest import PROJECT_ROOT, QUESTION, load_params


def tiny_run(training_params, labelled_images):
    examples = [Example(i, image, answer, label) for i, image, label, answer in labelled_images]
    corpus = [e.answer for e in examples] + ["USER: ASSISTANT: " + QUESTION]
    processor = build_processor(train_tokenizer(corpus, 300), training_params["model"])
    model = build_tiny_model(processor, training_params["model"])
    history = train(model, processor, examples, QUESTION, training_params["stages"], training_params["max_length"])
    remove_checkpoints(training_params["stages"])  # else a second run would resume from them, as the node's would
    return model, history


def losses(history, stage):
    return [entry["loss"] for entry in history[stage] if "loss" in entry]


def test_two_stage_deepspeed_training_learns_and_is_seeded(training_params, labelled_images):
    model, history = tiny_run(training_params, labelled_images)
    warmup, instruction = losses(history, "vision_warmup"), losses(history, "instruction")
    assert len(warmup) == 4 and len(instruction) == 4
    assert instruction[-1] < instruction[0]
    assert all(e["samples_per_second"] > 0 for e in history["instruction"] if "loss" in e)
    # torchtune-style guard: a silent change in data, masking or optimisation moves this number.
    # The first instruction loss is the untrained LM on a ~300-token vocabulary: about ln(300).
    assert instruction[0] == pytest.approx(5.7, abs=0.4)
    _, again = tiny_run(training_params, labelled_images)
    assert losses(again, "instruction") == pytest.approx(instruction, rel=1e-4)


def test_skipped_warmup_stage(training_params, labelled_images):
    training_params["stages"]["vision_warmup"]["max_steps"] = 0
    _, history = tiny_run(training_params, labelled_images)
    assert "vision_warmup" not in history and len(losses(history, "instruction")) == 4


def test_gpu_recipe_builds_training_arguments(monkeypatch, tmp_path):
    """conf/gpu is FakeVLM's recipe; it can't train here, but its arguments must build."""
    base, gpu = (OmegaConf.load(PROJECT_ROOT / "conf" / env / "parameters_training.yml") for env in ("base", "gpu"))
    params = OmegaConf.to_container(OmegaConf.merge(base, gpu), resolve=True)["training"]
    assert params["model"]["pretrained"] == "llava-hf/llava-1.5-7b-hf"
    assert params["stages"]["vision_warmup"]["max_steps"] == 0
    stage = dict(params["stages"]["instruction"], output_dir=str(tmp_path))
    stage["deepspeed"] = str(PROJECT_ROOT / stage["deepspeed"])
    assert stage.pop("vision_tower_lr") is None  # one rate for every weight, as run_trainer reads it
    # pretend to be on an Ampere GPU so bf16/tf32 validation passes on this CPU machine
    monkeypatch.setattr(hf_training_args, "is_torch_bf16_gpu_available", lambda: True)
    monkeypatch.setattr(hf_training_args, "is_torch_tf32_available", lambda: True)
    monkeypatch.setattr(hf_training_args, "enable_tf32", lambda enabled: None)
    args = TrainingArguments(**stage)
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (2e-5, 2, 32)
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 0.03 and args.weight_decay == 0
    assert args.bf16 and args.tf32 and args.gradient_checkpointing
    assert params["max_length"] == 1024
    ds = json.loads((PROJECT_ROOT / "conf/base/deepspeed/zero2.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2 and args.deepspeed == stage["deepspeed"]
    # 32 per GPU x 8 GPUs, no accumulation: FakeVLM's global batch of 256
    assert args.per_device_train_batch_size * 8 * args.gradient_accumulation_steps == 256


def test_base_and_gpu_training_params_load():
    assert load_params("training")["model"]["pretrained"] is None
    assert load_params("training", "gpu")["model"]["dtype"] == "bfloat16"


def test_warmup_weights_reach_the_llava(training_params, labelled_images):
    """Stage 1 trains copies (DeepSpeed hooks stay on them); its result must be in the model."""
    from fakevlm.training import VisionWarmupClassifier

    examples = [Example(i, image, answer, label) for i, image, label, answer in labelled_images]
    processor = build_processor(train_tokenizer([e.answer for e in examples], 300), training_params["model"])
    model = build_tiny_model(processor, training_params["model"])
    classifier = VisionWarmupClassifier(model)
    before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    for p in classifier.vision_tower.parameters():
        p.data.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.model.vision_tower.state_dict().items())
    classifier.copy_into(model)
    assert all(torch.equal(before[k] + 1.0, v) for k, v in model.model.vision_tower.state_dict().items())


def test_checkpoints_of_another_run_are_not_resumed(training_params, labelled_images, tmp_path):
    from fakevlm.training import claim_output_dirs

    stages = training_params["stages"]
    stale = Path(stages["instruction"]["output_dir"]) / "checkpoint-3"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    claim_output_dirs(stages, "run-a")
    assert not stale.exists()   # no fingerprint: left by someone else
    stale.mkdir()
    claim_output_dirs(stages, "run-a")
    assert stale.exists()       # the same run, killed: resume
    claim_output_dirs(stages, "run-b")
    assert not stale.exists()


@pytest.mark.parametrize("name", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_deepspeed_configs(name):
    config = json.loads((PROJECT_ROOT / f"conf/base/deepspeed/{name}.json").read_text())["zero_optimization"]
    assert config["stage"] == int(name[4])
    assert ("offload_optimizer" in config) == name.endswith("offload")


def test_lora_trains_adapters_and_saves_a_plain_llava(training_params, labelled_images, tmp_path):
    lora = dict(load_params("training")["lora"], enabled=True, r=4, alpha=8, dropout=0.0)
    training_params["stages"]["vision_warmup"]["max_steps"] = 0
    examples = [Example(i, image, answer, label) for i, image, label, answer in labelled_images]
    corpus = [e.answer for e in examples] + ["USER: ASSISTANT: " + QUESTION]
    processor = build_processor(train_tokenizer(corpus, 300), training_params["model"])
    model = build_tiny_model(processor, training_params["model"])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    history = train(model, processor, examples, QUESTION, training_params["stages"], training_params["max_length"],
                    lora=lora)
    assert len(losses(history, "instruction")) == 4
    after = model.state_dict()
    assert after.keys() == before.keys()          # adapters merged away: the keys of a plain LLaVA
    assert not model.get_input_embeddings()._forward_hooks   # LoRA's input-grad hook went with them
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    assert changed, "nothing trained"
    assert all(".language_model." in name or "multi_modal_projector" in name for name in changed), changed
    assert any(name.endswith("self_attn.q_proj.weight") for name in changed)          # merged LoRA delta
    assert not any("vision_tower" in name or "embed_tokens" in name for name in changed)
    FakeVLM(model, processor).save_pretrained(tmp_path / "lora-model")
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path / "lora-model")
    assert torch.equal(reloaded.state_dict()["model.language_model.layers.0.self_attn.q_proj.weight"],
                       after["model.language_model.layers.0.self_attn.q_proj.weight"])


def test_vision_tower_learning_rate_of_its_own(training_params, labelled_images):
    # stage 2 with the tower's learning rate at 0: DeepSpeed's optimizer keeps the tower still
    # while the projector and the language model learn (weight decay off, so 0 means still)
    training_params["stages"]["vision_warmup"]["max_steps"] = 0
    training_params["stages"]["instruction"]["vision_tower_lr"] = 0.0
    examples = [Example(i, image, answer, label) for i, image, label, answer in labelled_images]
    processor = build_processor(train_tokenizer([e.answer for e in examples] + [QUESTION], 300), training_params["model"])
    model = build_tiny_model(processor, training_params["model"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    history = train(model, processor, examples, QUESTION, training_params["stages"], training_params["max_length"])
    remove_checkpoints(training_params["stages"])
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    assert not any("vision_tower" in name for name in changed)
    assert any("multi_modal_projector" in name for name in changed) and any("language_model" in name for name in changed)
    assert max(e.get("learning_rate", 0) for e in history["instruction"]) > 0  # the logged rate: the language model's


def test_the_warmup_tells_fake_families_apart_where_the_data_records_them(training_params, labelled_images):
    import pandas as pd

    from fakevlm.training import TrainingSamples, VisionWarmupClassifier, load_examples, warmup_classes

    rows = pd.DataFrame({"id": ["r", "c", "s", "u"], "image_path": ["r.png", "c.png", "s.png", "u.png"],
                         "answer": ["a"] * 4, "label": ["real", "fake", "fake", "fake"],
                         "artifact_family": [None, "checkerboard", "splice", float("nan")]})
    examples = load_examples(rows)
    assert [e.family for e in examples] == [None, "checkerboard", "splice", None]
    assert warmup_classes(examples, "family") == ["real", "checkerboard", "fake", "splice"]
    assert warmup_classes(examples, "label") == ["real", "fake"]
    assert [e.family for e in load_examples(rows.drop(columns="artifact_family"))] == [None] * 4
    with pytest.raises(ValueError, match="vision_warmup.classes must be 'label' or 'family', not 'colour'"):
        warmup_classes(examples, "colour")

    families = ["checkerboard", "splice"]
    examples = [Example(i, image, answer, label, families[n % 4 // 2] if label == "fake" else None)
                for n, (i, image, label, answer) in enumerate(labelled_images)]
    processor = build_processor(train_tokenizer([e.answer for e in examples], 300), training_params["model"])
    samples = TrainingSamples(processor, examples, QUESTION, 512, warmup_by="family")
    assert samples.warmup_classes == ["real", "checkerboard", "splice"]
    assert [int(samples[n]["warmup_class"]) for n in range(4)] == [0, 1, 0, 2]
    classifier = VisionWarmupClassifier(build_tiny_model(processor, training_params["model"]), 3)
    assert classifier(samples[1]["pixel_values"][None], samples[1]["warmup_class"][None])["logits"].shape == (1, 3)
