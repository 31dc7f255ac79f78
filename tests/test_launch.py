"""Checkpoints and launchers: kill -9 then resume, and two processes through torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from fakevlm.launch import environment_without_launcher, write_job
from fakevlm.model import FakeVLM, build_processor, build_tiny_model, train_tokenizer
from fakevlm.pipelines.training.nodes import build_model, train_fakevlm
from fakevlm.training import load_examples

from .conftest import PROJECT_ROOT, QUESTION, manifest_of


def tiny_fakevlm(training_params, manifest: pd.DataFrame) -> FakeVLM:
    corpus = [*manifest["answer"], "USER: ASSISTANT: " + QUESTION]
    processor = build_processor(train_tokenizer(corpus, 300), training_params["model"])
    return FakeVLM(build_tiny_model(processor, training_params["model"]), processor)


def test_kill_9_during_training_then_the_same_command_resumes(tmp_path, training_params, labelled_images):
    stages = training_params["stages"]
    stages["instruction"].update(max_steps=40, save_steps=10, save_total_limit=2)
    manifest = manifest_of(tmp_path, labelled_images)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    write_job(job_dir, tiny_fakevlm(training_params, manifest), manifest, training_params)
    command = [sys.executable, "-m", "fakevlm.launch", str(job_dir)]
    checkpoints = Path(stages["instruction"]["output_dir"])

    first = subprocess.Popen(command, env=environment_without_launcher(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-10" / "trainer_state.json").is_file():
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint-10 before the run ended"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert not (job_dir / "history.json").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert 10 <= killed_at < 40

    second = subprocess.run(command, env=environment_without_launcher(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resuming from" in log and "instruction/checkpoint-" in log
    assert "vision_warmup/checkpoint" not in log  # the warm-up's result is inside the checkpoint
    history = json.loads((job_dir / "history.json").read_text())
    steps = [entry["step"] for entry in history["instruction"] if "loss" in entry]
    # the counter went on: one logged loss per step, from the first run and the second, up to 40
    assert steps == list(range(1, 41))
    assert json.loads((job_dir / "rank0.json").read_text())["steps"]["instruction"] == 40
    assert (job_dir / "out" / "model.safetensors").is_file()


def test_two_processes_train_through_torchrun(tmp_path, training_params, labelled_images):
    training_params.update(keep_checkpoints=True,
                           launcher={"command": "torchrun", "nproc_per_node": 2, "hostfile": None,
                                     "master_port": None, "job_dir": str(tmp_path / "jobs")})
    manifest = manifest_of(tmp_path, labelled_images)

    model, summary, mlflow_metrics = train_fakevlm(manifest, training_params)

    # the prompt went through the workers' folders with the weights
    assert (model.question, model.max_new_tokens) == (training_params["question"], training_params["max_new_tokens"])
    # throughput goes to MLflow; the summary DVC hashes holds no wall-clock figure
    assert all("samples_per_second" not in e and "train_runtime" not in e
               for entries in summary["stages"].values() for e in entries)
    assert all(point["value"] > 0 for point in mlflow_metrics["instruction.samples_per_second"])
    assert summary["ranks"] == [
        {"rank": rank, "world_size": 2, "steps": {"vision_warmup": 4, "instruction": 4}} for rank in (0, 1)
    ]
    instruction = Path(training_params["stages"]["instruction"]["output_dir"])
    assert [p.name for p in instruction.glob("checkpoint-*")] == ["checkpoint-4"]
    # ZeRO-2 shards the optimizer state: one file per rank in the one checkpoint
    shards = sorted(p.name for p in (instruction / "checkpoint-4").glob("global_step4/*optim_states.pt"))
    assert len(shards) == 2
    assert list((tmp_path / "jobs").iterdir()) == []  # the job folder went away with the run
    assert model.generate([labelled_images[0][1]], QUESTION, max_new_tokens=4)[0] is not None


def test_zero3_shards_are_gathered_into_the_saved_model(tmp_path, training_params, labelled_images):
    # every weight sharded across the two ranks (the config's threshold keeps small ones whole)
    zero3 = json.loads((PROJECT_ROOT / "conf/base/deepspeed/zero3.json").read_text())
    zero3["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (tmp_path / "zero3.json").write_text(json.dumps(zero3))
    for stage in training_params["stages"].values():
        stage.update(deepspeed=str(tmp_path / "zero3.json"), save_strategy="no")
    training_params.update(cache_pixels=False,
                           launcher={"command": "torchrun", "nproc_per_node": 2, "hostfile": None,
                                     "master_port": None, "job_dir": str(tmp_path / "jobs")})
    manifest = manifest_of(tmp_path, labelled_images)
    untrained = build_model(load_examples(manifest), training_params).model.state_dict()

    model, summary, _ = train_fakevlm(manifest, training_params)

    assert [r["steps"] for r in summary["ranks"]] == [{"vision_warmup": 4, "instruction": 4}] * 2
    trained = model.model.state_dict()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in untrained.items()}
    changed = {k for k in trained if not torch.equal(trained[k], untrained[k])}
    assert any(k.startswith("model.vision_tower.encoder") for k in changed)       # stage 1, gathered
    assert any(k.startswith("model.language_model.layers") for k in changed)      # stage 2, gathered
    assert model.generate([labelled_images[0][1]], QUESTION, max_new_tokens=4)[0] is not None


def test_the_workers_get_each_fakes_family(tmp_path, training_params, labelled_images):
    """Launched workers must train the warm-up on the classes the in-process run uses."""
    manifest = manifest_of(tmp_path, labelled_images)
    manifest["artifact_family"] = [("splice" if n % 4 == 1 else "checkerboard") if label == "fake" else None
                                   for n, label in enumerate(manifest["label"])]
    write_job(tmp_path, tiny_fakevlm(training_params, manifest), manifest, training_params)
    rows = pd.DataFrame(json.loads((tmp_path / "job.json").read_text())["rows"])
    assert load_examples(rows) == load_examples(manifest)
    assert {e.family for e in load_examples(rows)} == {None, "splice", "checkerboard"}
