"""`fakevlm serve` as its users call it: a real server in a subprocess, HTTP clients, the openai
client and headless Chromium."""

from __future__ import annotations

import base64
import io
import math
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeDriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fakevlm.console import load_detector, read_image
from fakevlm.metrics import parse_verdict
from fakevlm.training import free_port

from .conftest import (
    checker_image,
    fakevlm_serve,
    make_labelled_images,
    save_tiny_model,
    small_training_params,
)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MAX_BATCH, MAX_UPLOAD_MB = 3, 1  # small, so that the limits are cheap to reach


@dataclass
class Server:
    url: str
    port: int
    log: Path


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
    return save_tiny_model(workdir / "model", params, make_labelled_images())


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory) -> Server:
    """`fakevlm serve` on a free port, with the default host; stopped after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    with fakevlm_serve(tiny_model, port, log, "--max-batch", str(MAX_BATCH),
                       "--max-upload-mb", str(MAX_UPLOAD_MB)) as url:
        yield Server(url, port, log)


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
    return requests.post(f"{server.url}/detect", files=[("files", file) for file in files], timeout=60)


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
                                 timeout=60)
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
    assert alone.json()["error"] == "broken.png: UnidentifiedImageError: cannot identify image file 'broken.png'"
    assert requests.get(f"{server.url}/health", timeout=5).json()["status"] == "ok"


def test_detect_refuses_what_is_past_its_limits(server, expected):
    image = expected["real.png"].path.read_bytes()
    too_many = post_detect(server, *[(f"{i}.png", image) for i in range(MAX_BATCH + 1)])
    assert too_many.status_code == 400 and f"at most {MAX_BATCH}" in too_many.json()["error"]
    too_large = post_detect(server, ("large.png", bytes(int(MAX_UPLOAD_MB * 1e6) + 1)))
    assert too_large.status_code == 413 and "larger than" in too_large.json()["error"]
    nothing = requests.post(f"{server.url}/detect", files={"note": (None, "no file")}, timeout=10)
    assert nothing.status_code == 400 and "no image" in nothing.json()["error"]


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
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: `make browser` installs Debian's chromium and chromium-driver")
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
                                timeout=60).json()["verdict"]
        assert text_of(driver, "verdict") == (verdict or "no verdict")
        probability = text_of(driver, "probability")
        assert (probability == "n/a") if fake.fake_probability is None else float(probability) == fake.fake_probability
        assert driver.find_element(By.ID, "preview").get_property("naturalWidth") == 32
    finally:
        driver.quit()


def chromium(profile: Path) -> webdriver.Chrome:
    """Headless Debian Chromium driven by its own chromedriver: Selenium Manager downloads nothing."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={profile}", "--window-size=900,700"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=ChromeDriverService(str(CHROMEDRIVER)))


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    # textContent, not .text: the page styles the verdict in capitals
    return driver.find_element(By.ID, element_id).get_property("textContent")
