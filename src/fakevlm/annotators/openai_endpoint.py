"""The `openai` annotator: any OpenAI-compatible chat-completions endpoint with image input
(vLLM, TGI, Ollama, hosted APIs, `fakevlm serve`).

The image goes as a PNG data URL; requests run in a thread pool of `concurrency`; each is retried
`retries` times with doubling back-off on timeouts, connection errors, 5xx, 408/409/429 and
replies without text; other 4xx (a bad key, an unknown model) fail at once. The client's own retries are off so that these are the only ones.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from fakevlm.annotators import Done, Request
from fakevlm.formats.common import open_image
from fakevlm.serving import encode_image

log = logging.getLogger(__name__)

RETRYABLE_4XX = (408, 409, 429)  # timeout, conflict, rate limit: worth another try after the back-off


class MalformedReply(ValueError):
    """A 200 reply that carries no answer text."""


class OpenAIAnnotator:
    def __init__(self, name: str, spec: dict[str, Any], prompts: dict[str, Any], api_key: str | None):
        from openai import OpenAI

        self.name = name
        self.spec = spec
        self.template = spec["template"]
        self.system = prompts["system"]
        # sampling shapes the answer as much as the model does, so it is part of the cache key
        self.model = f"{spec['model']}@{spec['base_url']}|t={spec['temperature']}|n={spec['max_tokens']}"
        key = api_key or os.environ.get(spec["api_key_env"]) or "unused"  # local servers need none
        self.client = OpenAI(base_url=spec["base_url"], api_key=key, timeout=spec["timeout_s"], max_retries=0)

    def annotate(self, requests: Sequence[Request], done: Done) -> dict[str, str]:
        errors: dict[str, str] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.spec["concurrency"]) as pool:
            futures = {pool.submit(self.ask_with_retries, request): request for request in requests}
            for future in concurrent.futures.as_completed(futures):
                request = futures[future]
                try:
                    done(request, future.result())  # in this thread: cache writes stay serial
                except Exception as error:  # noqa: BLE001 - any failure quarantines this record only
                    errors[request.id] = f"{type(error).__name__}: {error}"
        return errors

    def ask_with_retries(self, request: Request) -> str:
        image_url = "data:image/png;base64," + encode_image(open_image(request.image_path).convert("RGB"))
        for attempt in range(self.spec["retries"] + 1):
            try:
                return self.ask(request.prompt, image_url)
            except Exception as error:  # timeouts, 5xx, refused connections, malformed replies
                if attempt == self.spec["retries"] or _refused(error):
                    raise
                log.warning("%s: %s on try %d; retrying", request.id, type(error).__name__, attempt + 1)
                time.sleep(self.spec["backoff_s"] * 2**attempt)
        raise AssertionError("unreachable")

    def ask(self, prompt: str, image_url: str) -> str:
        reply = self.client.chat.completions.create(
            model=self.spec["model"],
            messages=[
                {"role": "system", "content": self.system},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                             {"type": "text", "text": prompt}]},
            ],
            temperature=self.spec["temperature"],
            max_tokens=self.spec["max_tokens"],
        )
        choices = getattr(reply, "choices", None)
        text = choices[0].message.content if choices and choices[0].message else None
        if not isinstance(text, str) or not text.strip():
            raise MalformedReply(f"no answer text in the reply: {str(reply)[:200]}")
        return text.strip()


def _refused(error: Exception) -> bool:
    """A 4xx that asking again cannot fix (bad request, key, model name); 408/409/429 can pass."""
    from openai import APIStatusError

    return isinstance(error, APIStatusError) and 400 <= error.status_code < 500 and error.status_code not in RETRYABLE_4XX
