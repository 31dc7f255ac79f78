"""`fakevlm serve` as its users call it: a real server in a subprocess, HTTP clients, the openai
client and headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai
import psutil
import pytest
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fakevlm.console import main
from fakevlm.detector import load_detector, read_image
from fakevlm.metrics import parse_verdict
from fakevlm.training import free_port

from .conftest import (
    checker_image,
    chromium,
    fakevlm_serve,
    make_labelled_images,
    save_tiny_model,
    small_training_params,
)

MAX_BATCH, MAX_UPLOAD_MB = 3, 2  # small, so that the limits are cheap to reach (2 MB: a 1 MB prompt passes)
MAX_IMAGE_MPIXELS, MAX_REQUEST_MPIXELS = 20, 40


@dataclass
class Server:
    url: str
    port: int
    log: Path
    token: str  # the page's, which uploads need

    @property
    def upload_headers(self) -> dict[str, str]:
        return {"X-FakeVLM-Token": self.token}


@dataclass
class Expected:
    """What the model answers in-process for one image file."""

    path: Path
    answer: str
    fake_probability: float | None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """conftest's saved_tiny_model, trained once for the module's one server, and longer (5 s): its
    answers are then sentences with a verdict and a fake probability to compare."""
    workdir = tmp_path_factory.mktemp("serve_model")
    params = small_training_params(workdir)
    params["stages"]["instruction"].update(max_steps=120, learning_rate=3e-3)
    return save_tiny_model(workdir / "fakevlm", params, make_labelled_images())  # served as model `fakevlm`


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory) -> Server:
    """`fakevlm serve` on a free port, with the default host; stopped after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    with fakevlm_serve(tiny_model, port, log, "--max-batch", str(MAX_BATCH), "--max-upload-mb", str(MAX_UPLOAD_MB),
                       "--max-image-mpixels", str(MAX_IMAGE_MPIXELS), "--max-request-mpixels",
                       str(MAX_REQUEST_MPIXELS), "--batch-wait-ms", "50") as url:
        yield Server(url, port, log, page_token(url))


def page_token(url: str) -> str:
    return re.search(r'<meta name="fakevlm-token" content="([^"]*)">', requests.get(url, timeout=10).text)[1]


@pytest.fixture(scope="module")
def expected(tiny_model, tmp_path_factory) -> dict[str, Expected]:
    """Two PNG files, one real-looking and one with the fake cue, and the model's answers in-process."""
    folder = tmp_path_factory.mktemp("serve_images")
    rng = np.random.default_rng(1)
    paths = []
    for name, fake in [("real.png", False), ("fake.png", True)]:
        checker_image(rng, fake).save(folder / name)
        paths.append(folder / name)
    detector = load_detector(str(tiny_model))
    # one image per call, as each request below sends: batching could change the last float digits
    answers = [detector.fakevlm.answer([read_image(path)], detector.question, detector.max_new_tokens, 1)
               for path in paths]
    return {path.name: Expected(path, texts[0], None if math.isnan(probs[0]) else round(probs[0], 4))
            for path, (texts, probs) in zip(paths, answers)}


def post_detect(server: Server, *files: tuple[str, bytes]) -> requests.Response:
    return requests.post(f"{server.url}/detect", files=[("files", file) for file in files],
                         headers=server.upload_headers, timeout=60)


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def openai_client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, image_url: str, **options):
    content = [{"type": "text", "text": "Does the image looks real/fake?"},
               {"type": "image_url", "image_url": {"url": image_url}}]
    return client.chat.completions.create(model="fakevlm", messages=[{"role": "user", "content": content}], **options)


def decompression_bomb_png() -> bytes:
    """A PNG of a few bytes whose header says 10,000 x 10,000 pixels, past PIL's 89-Mpixel guard."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = struct.pack(">II", 10_000, 10_000) + data[24:29]  # IHDR: width, height, then depth, colour, …
    data[16:33] = header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def test_detect_answers_as_the_model_does_in_process(server, expected):
    for name, want in expected.items():
        response = requests.post(f"{server.url}/detect", files={"file": (name, want.path.read_bytes(), "image/png")},
                                 headers=server.upload_headers, timeout=60)
        assert response.status_code == 200
        result = response.json()
        assert result == {"path": name, "verdict": parse_verdict(want.answer), "fake_probability": want.fake_probability,
                          "explanation": want.answer}
        assert result["verdict"] in {"real", "fake", None}
        assert (result["verdict"] is None) == (result["fake_probability"] is None)
        assert result["fake_probability"] is None or 0 <= result["fake_probability"] <= 1


def test_concurrent_requests_get_the_answers_of_one_at_a_time(server, expected):
    client = openai_client(server)

    def detected(want: Expected) -> str:
        return post_detect(server, (want.path.name, want.path.read_bytes())).json()["explanation"]

    def chatted(want: Expected) -> str:
        return ask(client, data_url(want.path)).choices[0].message.content

    wanted = list(expected.values()) * 2
    with ThreadPoolExecutor(max_workers=len(wanted) * 2) as pool:
        answers = [pool.submit(call, want) for call in (detected, chatted) for want in wanted]
        assert [answer.result() for answer in answers] == [want.answer for want in wanted] * 2


def test_detect_reports_bad_files_and_keeps_serving(server, expected):
    real = expected["real.png"]
    response = post_detect(server, ("broken.png", b"not an image"), ("bomb.png", decompression_bomb_png()),
                           ("real.png", real.path.read_bytes()))
    assert response.status_code == 200
    broken, bomb, good = response.json()
    assert broken["path"] == "broken.png" and broken["error"].startswith("UnidentifiedImageError")
    assert bomb["path"] == "bomb.png" and bomb["error"].startswith("DecompressionBomb")
    assert good["explanation"] == real.answer

    alone = post_detect(server, ("broken.png", b"not an image"))
    assert alone.status_code == 400
    assert alone.json()["error"]["message"] == "broken.png: UnidentifiedImageError: cannot identify image file 'broken.png'"
    assert requests.get(f"{server.url}/health", timeout=5).json()["status"] == "ok"


def test_detect_refuses_what_is_past_its_limits(server, expected):
    image = expected["real.png"].path.read_bytes()
    too_many = post_detect(server, *[(f"{i}.png", image) for i in range(MAX_BATCH + 1)])
    assert too_many.status_code == 400 and f"at most {MAX_BATCH}" in too_many.json()["error"]["message"]
    too_large = post_detect(server, ("large.png", bytes(int(MAX_UPLOAD_MB * 1e6) + 1)))
    assert too_large.status_code == 413 and "larger than" in too_large.json()["error"]["message"]
    nothing = requests.post(f"{server.url}/detect", files={"note": (None, "no file")}, headers=server.upload_headers,
                            timeout=10)
    assert nothing.status_code == 400 and "no image" in nothing.json()["error"]["message"]


def test_openai_client_gets_the_detect_explanation(server, expected):
    client = openai_client(server)
    [model] = client.models.list().data
    fake = expected["fake.png"]

    completion = ask(client, data_url(fake.path))

    assert completion.object == "chat.completion" and completion.model == model.id
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == fake.answer
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0

    short = ask(client, data_url(fake.path), max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens <= 3
    assert fake.answer.startswith(short.choices[0].message.content) and len(short.choices[0].message.content) < len(fake.answer)


def test_chat_errors_come_in_openais_shape(server, expected):
    with pytest.raises(openai.BadRequestError) as refused:
        ask(openai_client(server), "https://example.com/image.png")
    assert refused.value.status_code == 400 and refused.value.code == "remote_url_not_supported"
    body = refused.value.response.json()
    assert body == {"error": {"message": body["error"]["message"], "type": "invalid_request_error", "param": None,
                              "code": "remote_url_not_supported"}}
    assert "not fetched" in body["error"]["message"]

    def refusal(**request) -> dict:
        response = requests.post(f"{server.url}/v1/chat/completions", json=request, timeout=30)
        assert response.status_code == 400
        return response.json()["error"]

    image = {"type": "image_url", "image_url": {"url": data_url(expected["real.png"].path)}}
    assert refusal(messages=[{"role": "user", "content": [image]}], stream=True)["code"] == "stream_not_supported"
    assert refusal(messages=[{"role": "user", "content": "no image"}])["code"] == "one_image_needed"
    broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"junk").decode()}}
    assert refusal(messages=[{"role": "user", "content": [broken]}])["code"] == "unreadable_image"
    assert refusal(messages=[])["code"] == "invalid_request"


def test_stats_count_exactly_the_calls_made(server, expected):
    def counts() -> dict:
        return requests.get(f"{server.url}/stats", timeout=5).json()

    before = counts()
    real = expected["real.png"]
    post_detect(server, ("real.png", real.path.read_bytes()))
    post_detect(server, ("broken.png", b"refused, and counted"))
    ask(openai_client(server), data_url(real.path))
    requests.get(f"{server.url}/health", timeout=5)
    assert counts() == {"requests": {"detect": before["requests"]["detect"] + 2,
                                     "chat_completions": before["requests"]["chat_completions"] + 1}}


def test_serves_this_machine_only_by_default(server):
    # the fixture passes no --host: uvicorn's own start-up line says where it listens
    assert f"Uvicorn running on http://127.0.0.1:{server.port}" in server.log.read_text()


def test_web_page_shows_the_verdict_for_a_chosen_image(server, expected, tmp_path):
    fake = expected["fake.png"]
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(f"{server.url}/")
        driver.find_element(By.ID, "file").send_keys(str(fake.path))
        WebDriverWait(driver, 60).until(lambda d: text_of(d, "verdict") or text_of(d, "error"))
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert text_of(driver, "error") == ""
        assert text_of(driver, "explanation") == fake.answer
        verdict = requests.post(f"{server.url}/detect", files={"file": ("fake.png", fake.path.read_bytes())},
                                headers=server.upload_headers, timeout=60).json()["verdict"]
        assert text_of(driver, "verdict") == (verdict or "no verdict")
        probability = text_of(driver, "probability")
        assert (probability == "n/a") if fake.fake_probability is None else float(probability) == fake.fake_probability
        assert driver.find_element(By.ID, "preview").get_property("naturalWidth") == 32
    finally:
        driver.quit()


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    # textContent, not .text: the page styles the verdict in capitals
    return driver.find_element(By.ID, element_id).get_property("textContent")


# --- issue 15: each request's cost bounded, no cross-site use, an API key, batching, a prompt stop

def server_process(server: Server) -> psutil.Process:
    """The `fakevlm serve` process: a child of this one, listening on the server's port."""
    [process] = [child for child in psutil.Process().children() if str(server.port) in child.cmdline()]
    return process


def png(width: int, height: int) -> bytes:
    """A blank PNG: a few kilobytes on the wire, width x height pixels once decoded."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def chat_with_question(server: Server, image: Path, question: str) -> requests.Response:
    content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": data_url(image)}}]
    return requests.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]},
                         timeout=60)


def test_a_prompt_past_the_context_is_refused_in_milliseconds(server, expected):
    image = expected["real.png"].path
    huge = chat_with_question(server, image, "is it real? " * 87_000)  # ~1 MB of text: the model has 512 positions
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 512 tokens" in huge.json()["error"]["message"]
    assert huge.elapsed.total_seconds() < 1  # refused before tokenising: 6.5 minutes of prefill before
    just_over = chat_with_question(server, image, "real " * 400)  # counted exactly: prompt + 128 answer tokens
    assert just_over.status_code == 400
    assert re.search(r"requested \d+ tokens \(\d+ in the messages, 128 in the completion\)",
                     just_over.json()["error"]["message"])
    assert chat_with_question(server, image, "Does the image looks real/fake?").status_code == 200


def test_thin_and_many_big_images_are_refused_or_decoded_within_a_memory_bound(server, expected):
    thin = post_detect(server, ("wide.png", png(100_000, 1)), ("tall.png", png(1, 1_000_000)),
                       ("real.png", expected["real.png"].path.read_bytes()))
    wide, tall, good = thin.json()
    assert thin.status_code == 200 and good["explanation"] == expected["real.png"].answer
    assert wide["error"] == "ImageRefused: 100000 x 1 pixels: an aspect ratio over 20 (--max-aspect-ratio)"
    assert tall["error"].startswith("ImageRefused: 1 x 1000000 pixels")
    too_big = post_detect(server, *[("big.png", png(9000, 9000))] * MAX_BATCH)
    assert too_big.status_code == 400 and too_big.json()["error"]["message"].count(
        f"more than {MAX_IMAGE_MPIXELS} Mpixels") == MAX_BATCH
    process, big = server_process(server), png(4000, 4000)
    over_budget = post_detect(server, *[("big.png", big)] * MAX_BATCH)  # 48 Mpixels
    assert over_budget.status_code == 413 and over_budget.json()["error"]["code"] == "too_many_pixels"

    # within the limits: two 16-Mpixel images per request from 6 clients at once. The server decodes two
    # images at a time (--decode-workers 2), each kept reduced to the model's side: its memory grows by
    # at most 2 decoded images (16 Mpixels x 3 bytes each, 96 MB) plus allocator slack: bound 400 MB
    start, peak, done = process.memory_info().rss, [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda i: post_detect(server, (f"a{i}.png", big), (f"b{i}.png", big)), range(6)))
    done.set()
    watcher.join()
    assert all(response.status_code == 200 and len(response.json()) == 2 for response in answers)
    assert peak[0] - start < 400e6, f"{(peak[0] - start) / 1e6:.0f} MB over the {start / 1e6:.0f} MB at start"
    assert process.memory_info().rss - start < 200e6  # after the burst: back near the start


def test_cross_site_requests_are_refused(server, expected):
    body = json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(expected["real.png"].path)}}]}]})
    # what a page elsewhere can send without a CORS preflight: text/plain, forms
    as_text = requests.post(f"{server.url}/v1/chat/completions", data=body, headers={"Content-Type": "text/plain"},
                            timeout=30)
    assert as_text.status_code == 415 and as_text.json()["error"]["code"] == "unsupported_media_type"
    form = requests.post(f"{server.url}/detect", files={"file": ("real.png", expected["real.png"].path.read_bytes())},
                         timeout=30)  # the page's token missing
    assert form.status_code == 403 and form.json()["error"]["code"] == "missing_token"
    wrong = requests.post(f"{server.url}/detect", files={"file": ("real.png", b"x")},
                          headers={"X-FakeVLM-Token": "guessed"}, timeout=30)
    assert wrong.status_code == 403
    page = requests.get(f"{server.url}/", timeout=10)
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe" not in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_a_foreign_host_is_refused(server):
    rebound = requests.get(f"{server.url}/v1/models", headers={"Host": "evil.example"}, timeout=10)
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "invalid_host"
    assert requests.get(f"{server.url}/health", headers={"Host": f"evil.example:{server.port}"}, timeout=10
                        ).status_code == 400
    assert requests.get(f"{server.url}/health", headers={"Host": f"localhost:{server.port}"}, timeout=10).ok


def test_a_bad_ppm_beside_good_files_gives_per_file_results(server, expected):
    real, fake = expected["real.png"], expected["fake.png"]
    response = post_detect(server, ("real.png", real.path.read_bytes()), ("bad.ppm", b"P6\n10 10\n70000\n" + bytes(600)),
                           ("fake.png", fake.path.read_bytes()))
    assert response.status_code == 200
    good, bad, other = response.json()
    assert bad == {"path": "bad.ppm", "error": "ValueError: maxval must be greater than 0 and less than 65536"}
    assert good["explanation"] == real.answer and other["explanation"] == fake.answer


def test_model_identity_and_error_shape_on_every_route(server, expected, tiny_model):
    models = requests.get(f"{server.url}/v1/models", timeout=10).json()
    assert [model["id"] for model in models["data"]] == ["fakevlm"]  # the folder's name, no path
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok", "model": "fakevlm"}
    assert str(tiny_model.parent) not in requests.get(f"{server.url}/health", timeout=10).text
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client(server).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(expected["real.png"].path)}}]}])
    assert missing.value.code == "model_not_found"
    for response, status in [(requests.get(f"{server.url}/nowhere", timeout=10), 404),
                             (requests.delete(f"{server.url}/v1/models", timeout=10), 405),
                             (missing.value.response, 404)]:
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


def test_batched_answers_equal_one_at_a_time(server, tiny_model, tmp_path):
    rng = np.random.default_rng(7)
    images = [checker_image(rng, fake=i % 2 == 1) for i in range(8)]
    detector = load_detector(str(tiny_model))
    one_at_a_time = [detector.fakevlm.answer([image], detector.question, detector.max_new_tokens, 1)[0][0]
                     for image in images]
    files = []
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
        files.append((f"{i}.png", (tmp_path / f"{i}.png").read_bytes()))
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        responses = list(pool.map(lambda file: post_detect(server, file), files))
    assert [response.json()["explanation"] for response in responses] == one_at_a_time
    assert max(int(response.headers["X-Batch-Images"]) for response in responses) > 1  # some were batched


@pytest.fixture(scope="module")
def keyed_server(tiny_model, tmp_path_factory) -> Server:
    port = free_port()
    log = tmp_path_factory.mktemp("keyed_log") / "server.log"
    with fakevlm_serve(tiny_model, port, log, "--api-key", API_KEY) as url:
        yield Server(url, port, log, page_token(url))


API_KEY = "sk-test-0123456789"


def test_api_key_through_the_openai_client(keyed_server, expected):
    fake = expected["fake.png"]
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key="wrong", max_retries=0), data_url(fake.path))
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    client = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key=API_KEY, max_retries=0)
    assert ask(client, data_url(fake.path)).choices[0].message.content == fake.answer
    assert requests.get(f"{keyed_server.url}/health", timeout=10).ok  # the one open endpoint
    for path in ["/stats", "/v1/models"]:
        assert requests.get(f"{keyed_server.url}{path}", timeout=10).status_code == 401
    upload = {"file": ("fake.png", fake.path.read_bytes())}
    assert requests.post(f"{keyed_server.url}/detect", files=upload, timeout=60).status_code == 401
    keyed = requests.post(f"{keyed_server.url}/detect", files=upload, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=60)
    assert keyed.json()["explanation"] == fake.answer
    assert keyed_server.token == ""  # the page carries no token: it asks for the key
    assert 'id="key"' in requests.get(keyed_server.url, timeout=10).text


def test_serving_beyond_this_machine_needs_a_key(monkeypatch):
    monkeypatch.delenv("FAKEVLM_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="--host 0.0.0.0 exposes the server"):
        main(["serve", "--host", "0.0.0.0", "--model", "no-such-folder"])  # refused before loading a model


def test_the_first_sigterm_stops_the_server_at_once(tiny_model, tmp_path, expected):
    port = free_port()
    with fakevlm_serve(tiny_model, port, tmp_path / "server.log", "--no-batching") as url:
        server = Server(url, port, tmp_path / "server.log", page_token(url))
        process = server_process(server)
        client = openai_client(server)
        pool = ThreadPoolExecutor(max_workers=8)
        pending = [pool.submit(ask, client, data_url(expected["real.png"].path)) for _ in range(40)]
        while requests.get(f"{url}/stats", timeout=5).json()["requests"]["chat_completions"] < 8:
            time.sleep(0.05)
        started = time.monotonic()
        process.terminate()
        process.wait(timeout=10)
        stopped = time.monotonic() - started
        pool.shutdown(wait=True)
    # one at a time, the 40 queued requests would have kept it busy; the waiting ones were refused
    assert stopped < 5, f"{stopped:.1f} s"
    outcomes = [future.exception() for future in pending]
    assert any(isinstance(error, (openai.APIStatusError, openai.APIConnectionError)) for error in outcomes)
