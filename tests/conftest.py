"""Shared fixtures: the project's own config, shrunk, and tiny images made in tmp_path."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from fakevlm.formats.fakeclue import QUESTION

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# absl (imported by rouge-score and kfp) makes its logging handler at import, on the sys.stderr of
# that moment: under pytest, pytest's capture file. logging.config.dictConfig (Kedro configures
# logging in-process, e.g. fakevlm.deploy) closes every handler ever made, and absl's close() closes
# its stream unless it is the current sys.stderr: in a test using capsys, pytest's own capture
# file, and pytest then crashed ("lost sys.stderr"). The real stderr is one absl never closes.
import absl.logging  # noqa: E402

absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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


def manifest_of(tmp_path: Path, labelled_images) -> pd.DataFrame:
    """The labelled images as validated-manifest rows, their pictures saved as PNG files."""
    rows = []
    for image_id, image, label, answer in labelled_images:
        path = tmp_path / "images" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        rows.append({"id": image_id, "image_path": str(path), "answer": answer, "label": label, "split": "train"})
    return pd.DataFrame(rows)


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
    # with the prompt, as the training stage saves it
    saved = FakeVLM(model, processor, question=QUESTION, max_new_tokens=training_params["max_new_tokens"])
    saved.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def tracking_at(uri: str, monkeypatch, artifact_location: str | None, experiment: str = "test"):
    """MLflow pointed at `uri` with a fresh experiment; its global state is reset afterwards."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(experiment, artifact_location=artifact_location))
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
def local_server(command: list[str], port: int, log_path: Path, timeout: float = 180, health: str = "/health",
                 env: dict[str, str] | None = None):
    """Start a server process (`env` added to ours), wait until http://127.0.0.1:port{health} answers,
    stop it afterwards (killed if it does not stop). Yields the base URL."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
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


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def chromium(profile: Path):
    """Headless Debian Chromium driven by its own chromedriver: Selenium Manager downloads nothing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeDriverService

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: `make browser` installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={profile}", "--window-size=900,700"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=ChromeDriverService(str(CHROMEDRIVER)))


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

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with moto_server(tmp_path / "moto.log") as url:
        yield url


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def moto_server(log_path: Path):
    """moto's S3 server on a free port of 127.0.0.1, as `local_server`; any credentials are accepted."""
    from fakevlm.training import free_port

    port = free_port()
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return local_server(command, port, log_path, health="/moto-api/")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class TcpProxy:
    """A TCP relay on 127.0.0.1 in front of a server's `port` that a test cuts (`down`: new
    connections refused, open ones closed) and restores (`up`): the server unreachable for a while
    without stopping it or losing what it holds."""

    def __init__(self, port: int):
        from fakevlm.training import free_port

        self.target, self.port = port, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is None:
            return
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() of the relay's thread
        self._listener.close()
        self._listener = None
        with self._guard:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                if listener.fileno() == -1:
                    return
                continue
            with self._guard:
                self._connections |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        with self._guard:
            self._connections -= {source, sink}


@contextlib.contextmanager
def postgres_server(password: str):
    """Debian's PostgreSQL with its own data folder on a free port of 127.0.0.1, stopped and removed
    afterwards; yields `postgresql://mlflow:<password>@127.0.0.1:<port>` (a database name goes after).
    PostgreSQL refuses to run as root: as root, it runs as the `postgres` user the package creates."""
    from fakevlm.training import free_port

    found = shutil.which("initdb")
    bindir = Path(found).resolve().parent if found else max(Path("/usr/lib/postgresql").glob("*/bin"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # not under pytest's tmp_path: its parents are open to root alone
    folder = Path(tempfile.mkdtemp(prefix="fakevlm-postgres-"))
    data, port = folder / "data", free_port()
    try:
        (folder / "password").write_text(password)
        if as_user:
            for path in (folder, folder / "password"):
                shutil.chown(path, "postgres")

        def pg(*command: str) -> None:
            done = subprocess.run([*as_user, *command], capture_output=True, text=True)
            if done.returncode:
                pytest.fail(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

        pg(str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", f"--pwfile={folder / 'password'}",
           "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        # no fsync: the cluster is thrown away, and MLflow creates its schema in ~100 migrations
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-o",
           f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off", "start")
        try:
            yield f"postgresql://mlflow:{password}@127.0.0.1:{port}"
        finally:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_databases(server: str, *names: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{server}/postgres")
    connection.autocommit = True   # CREATE DATABASE refuses to run in a transaction
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"CREATE DATABASE {name}")
    connection.close()


TEAM = {"admin": "admin-password-1", "pipeline": "pipeline-password-1", "viewer": "viewer-password-1"}


@pytest.fixture(scope="module")
def team_mlflow(tmp_path_factory):
    """A team's MLflow on 127.0.0.1: `mlflow server --app-name basic-auth` with runs, registry and
    users in PostgreSQL and artifacts proxied to an S3 bucket (moto). Users: admin, `pipeline` and
    `viewer` (default permission READ). The tracking server and S3 are reached through TcpProxy's
    a test may cut. Yields a namespace: url (the tracking proxy's), tracking, s3, database, bucket, s3_url."""
    import boto3
    from mlflow.server import get_app_client

    from fakevlm.training import free_port

    logs = tmp_path_factory.mktemp("team-mlflow")
    with postgres_server("db-password-1") as database, moto_server(logs / "moto.log") as s3_url:
        create_databases(database, "mlflow", "mlflow_auth")
        boto3.client("s3", endpoint_url=s3_url, **{k.lower(): v for k, v in S3_CREDENTIALS.items()
                                                   if k != "AWS_DEFAULT_REGION"}).create_bucket(Bucket="team")
        s3 = TcpProxy(int(s3_url.rsplit(":", 1)[1]))
        # SQLAlchemy 2.1 reads postgresql:// as psycopg 3; the driver pinned here is psycopg2
        store = database.replace("postgresql://", "postgresql+psycopg2://")
        auth = logs / "basic_auth.ini"
        auth.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {store}/mlflow_auth\n"
                        f"admin_username = admin\nadmin_password = {TEAM['admin']}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                        # a good password's slow hash checked once a minute, not on every request
                        "auth_cache_ttl_seconds = 60\n")
        port = free_port()
        command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1", "--backend-store-uri", f"{store}/mlflow",
                   "--artifacts-destination", "s3://team/mlflow"]
        # boto3 in the server gives up on an unreachable S3 after 2 tries rather than 5
        env = {**S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3.url, "MLFLOW_AUTH_CONFIG_PATH": str(auth),
               "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key", "AWS_RETRY_MODE": "standard",
               "AWS_MAX_ATTEMPTS": "2"}
        with local_server(command, port, logs / "mlflow-server.log", env=env) as direct:
            tracking = TcpProxy(port)
            with pytest.MonkeyPatch.context() as admin:
                admin.setenv("MLFLOW_TRACKING_USERNAME", "admin")
                admin.setenv("MLFLOW_TRACKING_PASSWORD", TEAM["admin"])
                users = get_app_client("basic-auth", tracking_uri=direct)
                for user in ("pipeline", "viewer"):
                    users.create_user(user, TEAM[user])
            yield SimpleNamespace(url=tracking.url, direct=direct, tracking=tracking, s3=s3, s3_url=s3_url,
                                  bucket="team", database=database, log=logs / "mlflow-server.log")
            tracking.down()
            s3.down()


@pytest.fixture
def team_server(team_mlflow, monkeypatch, request):
    """The module's team MLflow as the `pipeline` user, in an experiment of this test's own; client
    retries cut short so that an outage fails in seconds. The proxies are up again afterwards."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pipeline")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TEAM["pipeline"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with tracking_at(team_mlflow.url, monkeypatch, None, experiment=request.node.name):
        try:
            yield team_mlflow
        finally:
            team_mlflow.tracking.up()
            team_mlflow.s3.up()
