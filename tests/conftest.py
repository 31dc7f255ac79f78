"""Shared fixtures: the project's own config, shrunk, and tiny images made in tmp_path."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Does the image looks real/fake?"


def load_params(name: str, env: str = "base") -> dict:
    """One `conf/<env>/parameters_<name>.yml`, resolved (YAML anchors included)."""
    path = PROJECT_ROOT / "conf" / env / f"parameters_{name}.yml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)[name]


@pytest.fixture
def training_params(tmp_path) -> dict:
    return small_training_params(tmp_path)


def small_training_params(workdir: Path) -> dict:
    """The default training config, smaller and with its outputs in `workdir`."""
    params = load_params("training")
    model = params["model"]
    model["image_size"] = 32
    model["vision"].update(tower="clip", patch_size=8, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2)
    model["text"].update(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2)
    model["tokenizer_vocab_size"] = 300
    for name, stage in params["stages"].items():
        stage.update(output_dir=str(workdir / "trainer" / name), max_steps=4, logging_steps=1, per_device_train_batch_size=4)
        stage["deepspeed"] = str(PROJECT_ROOT / stage["deepspeed"])
    return params


def checker_image(rng: np.random.Generator, fake: bool, size: int = 32) -> Image.Image:
    """Noise, plus a bright 2-pixel grid when `fake`: a cue a tiny model can see."""
    pixels = rng.integers(60, 190, (size, size, 3), dtype=np.uint8)
    if fake:
        pixels[::2, ::2] = 255
    return Image.fromarray(pixels)


@pytest.fixture
def labelled_images():
    return make_labelled_images()


def make_labelled_images() -> list[tuple[str, Image.Image, str, str]]:
    """16 (id, image, label, answer) tuples, half fake."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        fake = i % 2 == 1
        label = "fake" if fake else "real"
        answer = (
            "This is a fake image. The whole image carries a clear checkerboard pattern."
            if fake
            else "This is a real image. The texture varies naturally."
        )
        rows.append((f"img{i:02d}", checker_image(rng, fake), label, answer))
    return rows


@pytest.fixture
def saved_tiny_model(tmp_path, training_params, labelled_images):
    return save_tiny_model(tmp_path / "model", training_params, labelled_images)


def save_tiny_model(folder: Path, training_params: dict, labelled_images: list) -> Path:
    """A tiny FakeVLM trained for a few steps and saved with save_pretrained in `folder`, returned."""
    from fakevlm.model import FakeVLM, build_processor, build_tiny_model, train_tokenizer
    from fakevlm.training import Example, train

    examples = [Example(i, image, answer, label) for i, image, label, answer in labelled_images]
    corpus = [e.answer for e in examples] + ["USER: ASSISTANT: " + QUESTION]
    processor = build_processor(train_tokenizer(corpus, 300), training_params["model"])
    model = build_tiny_model(processor, training_params["model"])
    train(model, processor, examples, QUESTION, training_params["stages"], training_params["max_length"])
    FakeVLM(model, processor).save_pretrained(folder)
    return folder


@contextlib.contextmanager
def tracking_at(uri: str, monkeypatch, artifact_location: str | None):
    """MLflow pointed at `uri` with a fresh experiment; its global state is reset afterwards."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("test", artifact_location=artifact_location))
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A throw-away SQLite MLflow store."""
    with tracking_at(f"sqlite:///{tmp_path / 'mlflow.db'}", monkeypatch, (tmp_path / "mlruns").as_uri()) as uri:
        yield uri


@contextlib.contextmanager
def local_server(command: list[str], port: int, log_path: Path, timeout: float = 180, health: str = "/health"):
    """Start a server process, wait until http://127.0.0.1:port{health} answers, stop it afterwards
    (killed if it does not stop). Yields the base URL."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + timeout   # slow to start on a busy 2-core machine (~45 s seen)
        while not _answers(f"{url}{health}"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{command[0]} {command[1]} did not start (exit {process.poll()}):\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fakevlm_serve(model: Path, port: int, log_path: Path, *options: str):
    """`fakevlm serve` of `model` on 127.0.0.1:port, as `local_server`."""
    command = [str(Path(sys.executable).parent / "fakevlm"), "serve", "--model", str(model), "--port", str(port),
               *options]
    return local_server(command, port, log_path)


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """A real `mlflow server` on 127.0.0.1 (SQLite behind it, artifacts proxied), stopped afterwards."""
    from fakevlm.training import free_port

    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "server-artifacts")]
    with local_server(command, port, tmp_path / "mlflow-server.log") as url, \
            tracking_at(url, monkeypatch, None) as uri:
        yield uri


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """An S3-compatible server (moto) on 127.0.0.1 with throw-away credentials; yields its endpoint URL."""
    from fakevlm.training import free_port

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with local_server(command, port, tmp_path / "moto.log", health="/moto-api/") as url:
        yield url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
