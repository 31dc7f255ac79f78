"""`fakevlm serve`: the detector over HTTP.

    POST /detect                 multipart image files -> `fakevlm detect`'s JSON, one object per file
    POST /v1/chat/completions    OpenAI-compatible (as vLLM serves it): an image as a data: URL -> the answer
    GET  /v1/models, /health, /stats, and / (a web page to try an image)

One model on the CPU: generation is serialised by a lock and runs in a worker thread, so the
event loop keeps answering /health and /stats meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import threading
import time
import uuid
import warnings
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from fakevlm.console import Detector, detect_files, read_image
from fakevlm.formats import UNREADABLE_IMAGE
from fakevlm.model import answer_suffix, build_prompt

UPLOAD_FIELDS = {"file", "files"}
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 413: "invalid_request_error", 500: "server_error"}


class ApiError(Exception):
    """A refused request: /detect answers `{"error": message}`, /v1/ OpenAI's error object."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class NamedBytes(io.BytesIO):
    """An upload's bytes under its name: PIL's errors show a file object's repr."""

    def __init__(self, name: str, data: bytes):
        super().__init__(data)
        self.upload_name = name  # not `name`: PIL would take that for a path on disk

    def __repr__(self) -> str:
        return repr(self.upload_name)


@dataclass
class Service:
    """The loaded detector, the request limits and the counts that /stats reports."""

    detector: Detector
    model_id: str
    max_batch: int
    max_upload_bytes: int
    started: int = field(default_factory=lambda: int(time.time()))
    requests: dict[str, int] = field(default_factory=lambda: {"detect": 0, "chat_completions": 0})
    # torch on the CPU already uses every core: concurrent generations would only slow each other down
    lock: threading.Lock = field(default_factory=threading.Lock)

    def detect(self, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        with self.lock:
            return detect_files(self.detector, [(name, NamedBytes(name, data)) for name, data in files], self.max_batch)

    def chat(self, image: Image.Image, question: str, max_tokens: int) -> tuple[str, str, dict[str, int]]:
        """The answer, OpenAI's finish reason, and the token usage."""
        fakevlm = self.detector.fakevlm
        processor = fakevlm.processor
        # the counts too: a fast tokenizer is not thread-safe while answer() changes its padding
        with self.lock:
            answer = fakevlm.answer([image], question, max_tokens)[0][0]
            prompt_tokens = len(processor(images=[image], text=[build_prompt(processor, question)])["input_ids"][0])
            # FakeVLM.answer returns text: re-tokenised as training wrote it (leading space, end of
            # sequence), it says whether generation stopped on its own or at max_tokens
            written = len(processor.tokenizer(answer_suffix(answer, processor), add_special_tokens=False)["input_ids"])
        completion_tokens = min(written, max_tokens)
        return answer, "length" if written > max_tokens else "stop", {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ImageURL(BaseModel):
    url: str


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class ChatMessage(BaseModel):
    role: str
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]] | None = None


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat request that FakeVLM uses; the others (temperature, …) are ignored:
    generation is greedy, as in evaluation."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # newer clients' name for max_tokens
    stream: bool = False


router = APIRouter()


def service_of(request: Request, counted: str | None = None) -> Service:
    service = request.app.state.service
    if counted:
        service.requests[counted] += 1  # handlers run on the event loop's one thread: no lock needed
    return service


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (chunked bodies included)."""
    too_large = ApiError(413, f"request body larger than {limit / 1e6:g} MB", "request_too_large")
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise ApiError(400, "Content-Length is not a number", "invalid_request") from None
    if declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def uploaded_files(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(filename, bytes) of each `file`/`files` part of a multipart/form-data body.

    Parsed with the standard library's MIME parser: FastAPI's own form parsing needs the
    python-multipart package, which the project does not otherwise need.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "send the images as multipart/form-data, in fields named `file` or `files`",
                       "not_multipart")
    header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    parts = message.iter_parts() if message.is_multipart() else []
    return [(part.get_filename() or "upload", part.get_payload(decode=True) or b"")
            for part in parts if part.get_param("name", header="content-disposition") in UPLOAD_FIELDS]


@router.post("/detect")
async def detect(request: Request) -> Any:
    """One image: detect's object; several: a list, with `error` for each unreadable file."""
    service = service_of(request, "detect")
    # parsing and decoding megabytes happens off the event loop, so /health and /stats stay quick
    files = await run_in_threadpool(uploaded_files, await read_body(request, service.max_upload_bytes),
                                    request.headers.get("content-type", ""))
    if not files:
        raise ApiError(400, "no image: send one or more files in fields named `file` or `files`", "no_image")
    if len(files) > service.max_batch:
        raise ApiError(400, f"{len(files)} images: at most {service.max_batch} per request", "too_many_images")
    results = await run_in_threadpool(service.detect, files)
    if all("error" in result for result in results):
        raise ApiError(400, "; ".join(f"{result['path']}: {result['error']}" for result in results), "unreadable_image")
    return results[0] if len(results) == 1 else results


def parse_chat_request(body: bytes) -> ChatRequest:
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
        raise ApiError(400, problems, "invalid_request") from None


def image_and_question(chat: ChatRequest) -> tuple[str, str]:
    """The last user message's one image URL and its text (empty when it has none)."""
    users = [message for message in chat.messages if message.role == "user"]
    if not users:
        raise ApiError(400, "no message with role `user`", "no_user_message")
    content = users[-1].content
    parts = [TextPart(type="text", text=content)] if isinstance(content, str) else content or []
    urls = [part.image_url.url for part in parts if isinstance(part, ImagePart)]
    if len(urls) != 1:
        raise ApiError(400, f"the user message needs exactly one image_url part, not {len(urls)}", "one_image_needed")
    return urls[0], " ".join(part.text for part in parts if isinstance(part, TextPart)).strip()


def image_from_data_url(url: str) -> Image.Image:
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        raise ApiError(400, "remote image URLs are not fetched: send the image inline as "
                            "data:image/<type>;base64,<data>", "remote_url_not_supported")
    header, _, data = url.partition(",")
    if scheme != "data" or not header.lower().endswith(";base64"):
        raise ApiError(400, "image_url must be a base64 data: URL (data:image/<type>;base64,<data>)", "invalid_image_url")
    try:
        return read_image(NamedBytes("image_url", base64.b64decode(data, validate=True)))
    except binascii.Error as error:
        raise ApiError(400, f"image_url: invalid base64: {error}", "invalid_image_url") from None
    except UNREADABLE_IMAGE as error:
        raise ApiError(400, f"image_url: {type(error).__name__}: {error}", "unreadable_image") from None


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> dict[str, Any]:
    service = service_of(request, "chat_completions")
    chat = parse_chat_request(await read_body(request, service.max_upload_bytes))
    if chat.stream:
        raise ApiError(400, "stream: true is not supported; ask with stream: false", "stream_not_supported")
    url, question = image_and_question(chat)
    image = await run_in_threadpool(image_from_data_url, url)
    default_tokens = service.detector.max_new_tokens  # the answer length the model was trained for, also the cap
    max_tokens = min(chat.max_completion_tokens or chat.max_tokens or default_tokens, default_tokens)
    answer, finish_reason, usage = await run_in_threadpool(service.chat, image, question or service.detector.question,
                                                           max_tokens)
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": service.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage}


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    service = service_of(request)
    return {"object": "list",
            "data": [{"id": service.model_id, "object": "model", "created": service.started, "owned_by": "fakevlm"}]}


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    return {"status": "ok", "model": service_of(request).model_id}


@router.get("/stats")
async def stats(request: Request) -> dict[str, dict[str, int]]:
    """Requests received per endpoint since start, refused ones included."""
    return {"requests": dict(service_of(request).requests)}


@router.get("/", response_class=HTMLResponse)
async def page() -> str:
    return PAGE


async def api_error_response(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, ApiError):  # a bug or a model failure: its details go to the server's log
        error = ApiError(500, "internal error", "internal_error")
    if request.url.path.startswith("/v1/"):
        body = {"error": {"message": error.message, "type": OPENAI_ERROR_TYPES[error.status], "param": None,
                          "code": error.code}}
    else:
        body = {"error": error.message}
    return JSONResponse(body, status_code=error.status)


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="fakevlm", summary="Is an image real or AI-generated, and why")
    app.state.service = service
    app.include_router(router)
    app.add_exception_handler(ApiError, api_error_response)
    app.add_exception_handler(Exception, api_error_response)
    return app


def run_server(detector: Detector, args: Namespace) -> None:
    # refuse at PIL's warning threshold (89 Mpixels) rather than only at twice it, its error
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    service = Service(detector, args.model, args.max_batch, int(args.max_upload_mb * 1e6))
    uvicorn.run(create_app(service), host=args.host, port=args.port)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fakevlm: real or AI-generated?</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  #preview { display: block; max-width: 100%; max-height: 20rem; min-width: 8rem; margin: 1rem 0; border: 1px solid #ccc; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .4rem 1rem; }
  dt { font-weight: 600; }
  dd { margin: 0; }
  #verdict { font-weight: 700; text-transform: uppercase; }
  .verdict-fake { color: #b00020; }
  .verdict-real { color: #1b7f3b; }
  #error { color: #b00020; }
</style>
</head>
<body>
<h1>Real or AI-generated?</h1>
<p>Choose an image: the model says whether it is real or fake, and why.</p>
<input type="file" id="file" accept="image/*">
<p id="status" role="status"></p>
<p id="error" role="alert"></p>
<img id="preview" alt="the chosen image" hidden>
<dl id="result" hidden>
  <dt>Verdict</dt><dd id="verdict"></dd>
  <dt>Fake probability</dt><dd id="probability"></dd>
  <dt>Explanation</dt><dd id="explanation"></dd>
</dl>
<script>
const $ = (id) => document.getElementById(id);
$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  for (const id of ["verdict", "probability", "explanation", "error"]) $(id).textContent = "";
  $("result").hidden = true;
  if (!file) return;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("status").textContent = "Asking the model\u2026";
  const form = new FormData();
  form.append("file", file);
  try {
    const result = await (await fetch("/detect", { method: "POST", body: form })).json();
    if (result.error) throw new Error(result.error);
    $("probability").textContent = result.fake_probability ?? "n/a";
    $("explanation").textContent = result.explanation;
    $("verdict").className = "verdict-" + result.verdict;
    $("verdict").textContent = result.verdict ?? "no verdict";  // last: a filled verdict means all is shown
    $("result").hidden = false;
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    $("status").textContent = "";
  }
});
</script>
</body>
</html>
"""
