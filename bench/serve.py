"""Serving throughput: `fakevlm serve` with batching across requests on and off, 1 and 8 clients, one run.

    .venv/bin/python bench/serve.py [--model DIR] [--requests 160] [--clients 1 8] [--max-batch 16]

--model is a `save_pretrained` folder (default: the default run's data/06_models/fakevlm). The
server is started twice on free ports, `--batching` then `--no-batching` (today's one request at
a time), and each time receives `--requests` /detect requests, one distinct random 64 px PNG each,
from 1 and from 8 concurrent clients. Prints requests/s, p50 and p95 latency per case, the mean
batch the server reports (X-Batch-Images), whether both servers gave the same answers, and the
issue's goals: requests/s at 8 clients batched / not batched (>= 4), p95 at 8 clients batched /
p95 of one client (<= 2).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from fakevlm.training import free_port


def pngs(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


class Served:
    """`fakevlm serve --model MODEL OPTIONS...` on a free port until the block ends."""

    def __init__(self, model: Path, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [str(Path(sys.executable).parent / "fakevlm"), "serve", "--model", str(model),
                        "--port", str(self.port), *options]

    def __enter__(self) -> Served:
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            try:
                page = requests.get(self.url, timeout=2)
                break
            except requests.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise SystemExit(f"the server did not start:\n{self.log.read().decode()[-3000:]}") from None
                time.sleep(0.5)
        self.headers = {"X-FakeVLM-Token": re.search(r'name="fakevlm-token" content="([^"]*)"', page.text)[1]}
        return self

    def __exit__(self, *_) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()

    def detect(self, image: bytes) -> tuple[float, str, int]:
        """Latency, answer, and the size of the batch that answered it."""
        start = time.perf_counter()
        response = requests.post(f"{self.url}/detect", files={"file": ("image.png", image)}, headers=self.headers,
                                 timeout=300)
        response.raise_for_status()
        return time.perf_counter() - start, response.json()["explanation"], int(response.headers["X-Batch-Images"])


def load(served: Served, images: list[bytes], clients: int) -> dict:
    served.detect(images[0])  # warm-up: first calls allocate and pick kernels
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(served.detect, images))
    wall = time.perf_counter() - start
    latencies = sorted(latency for latency, _, _ in results)
    return {"rps": len(images) / wall, "p50": statistics.median(latencies),
            "p95": latencies[max(0, int(0.95 * len(latencies)) - 1)],
            "batch": statistics.mean(batch for _, _, batch in results), "answers": [answer for _, answer, _ in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("data/06_models/fakevlm"))
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args()
    images = pngs(args.requests)
    figures = {}
    for batching in ("--batching", "--no-batching"):
        with Served(args.model, batching, "--max-batch", str(args.max_batch)) as served:
            for clients in args.clients:
                figures[batching, clients] = load(served, images, clients)
    print(f"requests: {args.requests} /detect (one 64 px PNG each), max batch {args.max_batch}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for (batching, clients), f in figures.items():
        print(f"{batching:<14} {clients:>2} clients: {f['rps']:6.1f} requests/s  p50 {f['p50'] * 1000:6.0f} ms  "
              f"p95 {f['p95'] * 1000:6.0f} ms  mean batch {f['batch']:.1f}")
    answers = {key: f["answers"] for key, f in figures.items()}
    print(f"same answers in every case: {len({tuple(a) for a in answers.values()}) == 1}")
    most = max(args.clients)
    on, off, single = figures["--batching", most], figures["--no-batching", most], figures["--batching", min(args.clients)]
    print(f"requests/s at {most} clients, batched / one at a time: {on['rps'] / off['rps']:.2f}  (goal >= 4)")
    print(f"p95 at {most} clients batched / p95 of {min(args.clients)} client: {on['p95'] / single['p95']:.2f}  "
          "(goal <= 2)")


if __name__ == "__main__":
    main()
