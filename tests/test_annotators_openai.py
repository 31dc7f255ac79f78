"""The `openai` annotator against real HTTP servers: one that misbehaves on purpose (timeouts,
500s, malformed replies), and fakevlm's own `fakevlm serve`, whose /stats counts the requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import requests

from fakevlm.annotators import build_annotator, requests_for, run_cached
from fakevlm.annotators.cache import AnnotationCache
from fakevlm.pipelines.annotation.nodes import annotate_images
from fakevlm.training import free_port

from .conftest import (
    fakevlm_serve,
    make_labelled_images,
    save_tiny_model,
    small_training_params,
)
from .test_annotators_helpers import annotation_params, prompts, tiny_manifest

GOOD_REPLY = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "This is a fake image. The grid repeats."}}]}


class Misbehaving(BaseHTTPRequestHandler):
    """Answers each POST with the next behaviour in `server.script`, then well; records the bodies."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
            behaviour = self.server.script.pop(0) if self.server.script else "ok"
        if behaviour == "slow":
            time.sleep(1.0)  # past the client's timeout
        if behaviour in ("500", "429", "401"):
            self._send(int(behaviour), {"error": {"message": "boom", "type": "server_error"}})
        elif behaviour == "malformed":
            self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []})
        else:
            self._send(200, GOOD_REPLY)

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fault_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.script, server.bodies, server.lock = [], [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def openai_params(tmp_path, base_url, **spec):
    params = annotation_params(tmp_path, annotators=["local_server"])
    defaults = {"timeout_s": 0.5, "retries": 2, "backoff_s": 0.01, "concurrency": 2, "template": "instruct"}
    params["available"]["local_server"].update(base_url=base_url, **{**defaults, **spec})
    return params


def run_one(tmp_path, server, n=1, **spec):
    params = openai_params(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/v1", **spec)
    annotator = build_annotator("local_server", params, prompts(), None)
    rows = tiny_manifest(tmp_path / "images", n=n)
    return run_cached(annotator, requests_for(rows, annotator, prompts(), params["verdict"]), AnnotationCache(tmp_path / "cache"))


@pytest.mark.parametrize("fault", ["500", "429", "slow", "malformed"])
def test_a_fault_is_retried_then_answered(tmp_path, fault_server, fault):
    fault_server.script = [fault, fault]
    out = run_one(tmp_path, fault_server)
    assert out.at[0, "answer"] == "This is a fake image. The grid repeats." and pd.isna(out.at[0, "error"])
    assert len(fault_server.bodies) == 3


@pytest.mark.parametrize(("fault", "error"), [("500", "InternalServerError"), ("slow", "APITimeoutError"),
                                              ("malformed", "MalformedReply")])
def test_a_lasting_fault_ends_in_an_error_for_that_record_only(tmp_path, fault_server, fault, error):
    fault_server.script = [fault] * 3  # every try of the first request; the second one is fine
    out = run_one(tmp_path, fault_server, n=2, concurrency=1)
    assert pd.isna(out.at[0, "answer"]) and out.at[0, "error"].startswith(error)
    assert out.at[1, "answer"] == "This is a fake image. The grid repeats."
    assert len(fault_server.bodies) == 4
    fault_server.bodies.clear()
    again = run_one(tmp_path, fault_server, n=2, concurrency=1)  # the failure was not cached
    assert len(fault_server.bodies) == 1 and pd.isna(again.at[0, "error"])


def test_a_refused_key_is_not_asked_again(tmp_path, fault_server):
    fault_server.script = ["401"]
    out = run_one(tmp_path, fault_server)
    assert out.at[0, "error"].startswith("AuthenticationError") and len(fault_server.bodies) == 1


def test_the_request_carries_the_prompt_the_image_and_the_key(tmp_path, fault_server, monkeypatch):
    seen = {}

    class KeyCheck(Misbehaving):
        def do_POST(self):
            seen["auth"] = self.headers["Authorization"]
            super().do_POST()

    fault_server.RequestHandlerClass = KeyCheck
    monkeypatch.setenv("FAKEVLM_ANNOTATOR_API_KEY", "sk-test")
    run_one(tmp_path, fault_server)
    body = fault_server.bodies[0]
    assert seen["auth"] == "Bearer sk-test"
    assert body["messages"][0] == {"role": "system", "content": prompts()["system"]}
    image, text = body["messages"][1]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert prompts()["categories"]["animal"]["instruction"]["real"] in text["text"]
    configured = annotation_params(tmp_path)["available"]["local_server"]
    assert body["temperature"] == configured["temperature"] and body["max_tokens"] == configured["max_tokens"] == 128


# --- against `fakevlm serve` ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory):
    """`fakevlm serve` of a tiny saved model on a free port of 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("annotator_serve")
    model = save_tiny_model(workdir / "fakevlm", small_training_params(workdir), make_labelled_images())
    with fakevlm_serve(model, free_port(), workdir / "server.log", "--host", "127.0.0.1") as url:
        yield url


def chat_requests(url):
    return requests.get(f"{url}/stats", timeout=10).json()["requests"]["chat_completions"]


def serve_params(tmp_path, url, cache):
    params = openai_params(tmp_path, f"{url}/v1", timeout_s=60, concurrency=1, template="fakeclue_question")
    params["cache_dir"] = str(cache)
    return params


N_IMAGES = 12


@pytest.fixture
def serve_manifest(tmp_path):
    return tiny_manifest(tmp_path / "images", n=N_IMAGES)


def test_first_run_asks_every_image_and_a_rerun_none(tmp_path, serve_url, serve_manifest):
    params = serve_params(tmp_path, serve_url, tmp_path / "cache")
    before = chat_requests(serve_url)
    first = annotate_images(serve_manifest, params, prompts(), {})
    assert chat_requests(serve_url) - before == N_IMAGES
    assert first["error"].isna().all() and first["answer"].str.len().gt(0).all()
    again = annotate_images(serve_manifest, params, prompts(), {})
    assert chat_requests(serve_url) - before == N_IMAGES  # nothing new
    pd.testing.assert_frame_equal(first, again)


DRIVER = """
import json, sys
import pandas as pd
from fakevlm.pipelines.annotation.nodes import annotate_images
manifest, params, prompts = pd.read_parquet(sys.argv[1]), json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
annotate_images(manifest, params, prompts, {})
"""


def test_a_killed_run_resumes_asking_only_the_missing_images(tmp_path, serve_url, serve_manifest):
    whole = annotate_images(serve_manifest, serve_params(tmp_path, serve_url, tmp_path / "whole"), prompts(), {})
    cache = tmp_path / "killed"
    params = serve_params(tmp_path, serve_url, cache)
    for name, data in [("params.json", params), ("prompts.json", prompts())]:
        (tmp_path / name).write_text(json.dumps(data))
    serve_manifest.to_parquet(tmp_path / "manifest.parquet")
    (tmp_path / "driver.py").write_text(DRIVER)
    process = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), *(str(tmp_path / n) for n in
                                ("manifest.parquet", "params.json", "prompts.json"))])
    deadline = time.monotonic() + 120
    while len(list(cache.rglob("*.json"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    cached = len(list(cache.rglob("*.json")))
    assert 3 <= cached < N_IMAGES, "the run should have been killed half-way"
    before = chat_requests(serve_url)
    resumed = annotate_images(serve_manifest, params, prompts(), {})
    assert chat_requests(serve_url) - before == N_IMAGES - cached
    pd.testing.assert_frame_equal(resumed, whole)
