"""`fakevlm serve`: the detector over HTTP.

    POST /detect                 multipart image files -> `fakevlm detect`'s JSON, one object per file
    POST /v1/chat/completions    OpenAI-compatible (as vLLM serves it): an image as a data: URL -> the answer
    GET  /v1/models, /health, /stats, and / (a web page to try an image)

Every request's cost is bounded before any work: the body's size, the prompt's tokens against the
model's context, each image's pixels and aspect ratio (read from its header, before decoding) and
a pixel budget per request. Images are decoded by a small pool of threads, reduced to what the
model needs as they are; one thread runs the model, gathering concurrent requests into one batched
generation. The event loop meanwhile keeps answering /health and /stats.

No cross-site use: only the Host names allowed (loopback by default) are served, so a DNS-rebinding
page cannot read answers; the chat endpoint takes only application/json and uploads need the
page's own token or the API key, so a page elsewhere cannot make the server work (neither can be
sent cross-site without a CORS preflight, which this server never grants). With an API key every
endpoint but /health (and the page itself, which holds no data) needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import hmac
import ipaddress
import io
import logging
import secrets
import threading
import time
import uuid
import warnings
from argparse import Namespace
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from fakevlm.detector import Detector, verdict
from fakevlm.model import answer_suffix, build_prompt

log = logging.getLogger(__name__)

UPLOAD_FIELDS = {"file", "files"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
TOKEN_HEADER = "x-fakevlm-token"
BATCH_HEADER = "x-batch-images"  # images generated together with the request's: batching, visible
OPEN_PATHS = {"/health", "/"}  # the page is static HTML: with a key it carries no token and asks for the key


class ApiError(Exception):
    """A refused request, answered in OpenAI's error shape on every route."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class ImageRefused(ValueError):
    """An image past the pixel or aspect-ratio limit, found from its header before decoding."""


class NamedBytes(io.BytesIO):
    """An upload's bytes under its name: PIL's errors show a file object's repr."""

    def __init__(self, name: str, data: bytes):
        super().__init__(data)
        self.upload_name = name  # not `name`: PIL would take that for a path on disk

    def __repr__(self) -> str:
        return repr(self.upload_name)


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int        # one image, from its header
    max_aspect: float      # long side / short side: a thin image is resized into a huge one
    request_pixels: int    # all the images of one request together
    side: int              # the model's input side: decoding reduces big images towards it, never below

    def check(self, image: Image.Image) -> int:
        width, height = image.size
        if width * height > self.max_pixels:
            raise ImageRefused(f"{width} x {height} pixels: more than {self.max_pixels / 1e6:g} Mpixels "
                               "(--max-image-mpixels)")
        if max(width, height) > self.max_aspect * max(min(width, height), 1):
            raise ImageRefused(f"{width} x {height} pixels: an aspect ratio over {self.max_aspect:g} "
                               "(--max-aspect-ratio)")
        return width * height

    def decode(self, image: Image.Image) -> Image.Image:
        """The image in RGB, decoded reduced (JPEG: DCT scaling) and then shrunk by whole factors
        while its short side stays at least the model's: what the processor needs, less memory held."""
        with image:
            image.draft("RGB", (self.side, self.side))
            image.load()
            factor = min(image.size) // self.side
            reduced = image.reduce(factor) if factor >= 2 else image
            return reduced.convert("RGB")


def decode_uploads(files: list[tuple[str, bytes]], limits: ImageLimits) -> list[Image.Image | str]:
    """Each file's image, or its error as `Type: message`: any decoder error stays that file's.

    Every header is read and checked, and the request's pixel budget too, before anything is decoded.
    """
    opened: list[Image.Image | str] = []
    total = 0
    for name, data in files:
        try:
            image = Image.open(NamedBytes(name, data))
            total += limits.check(image)
            opened.append(image)
        except Exception as error:  # noqa: BLE001 - untrusted bytes: whatever a decoder raises is that file's error
            opened.append(f"{type(error).__name__}: {error}")
    if total > limits.request_pixels:
        raise ApiError(413, f"{total / 1e6:.1f} Mpixels in one request: at most {limits.request_pixels / 1e6:g} "
                            "(--max-request-mpixels)", "too_many_pixels")
    decoded: list[Image.Image | str] = []
    for item in opened:
        try:
            decoded.append(item if isinstance(item, str) else limits.decode(item))
        except Exception as error:  # noqa: BLE001 - as above
            decoded.append(f"{type(error).__name__}: {error}")
    return decoded


class ShuttingDown(Exception):
    """Raised inside the model's forward pass once the server stops: the running batch ends there."""


@dataclass
class Job:
    images: list[Image.Image]
    question: str
    max_tokens: int
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[str, int]:  # jobs share one generate() call only with the same prompt and length
        return self.question, self.max_tokens


class Batcher:
    """One thread runs the model. With `gather`, the jobs waiting (up to `max_batch` images, waiting
    at most `wait_s` for more) are answered by one batched greedy generation; without, one job at a time.

    The processor pads on the left, and every prompt of one batch is the same: a batch's answers are
    those of one image at a time.
    """

    def __init__(self, fakevlm: Any, max_batch: int, wait_s: float, gather: bool):
        self.fakevlm, self.max_batch, self.wait_s, self.gather = fakevlm, max_batch, wait_s, gather
        self.queue: deque[Job] = deque()
        self.ready = threading.Condition()
        self.closed = False
        fakevlm.model.register_forward_pre_hook(self._stop_if_closed)
        self.thread = threading.Thread(target=self._run, name="fakevlm-batcher", daemon=True)
        self.thread.start()

    def submit(self, images: list[Image.Image], question: str, max_tokens: int) -> Future:
        job = Job(images, question, max_tokens)
        with self.ready:
            if self.closed:
                raise ApiError(503, "the server is shutting down", "shutting_down")
            self.queue.append(job)
            self.ready.notify()
        return job.future

    def close(self, timeout: float) -> None:
        """Refuse the waiting jobs, stop the running batch at its next forward pass, wait for the thread."""
        with self.ready:
            self.closed = True
            for job in self.queue:
                if not job.future.cancelled():  # its client has gone
                    job.future.set_exception(ApiError(503, "the server is shutting down", "shutting_down"))
            self.queue.clear()
            self.ready.notify_all()
        self.thread.join(timeout)

    def _stop_if_closed(self, *_: Any) -> None:
        if self.closed:
            raise ShuttingDown

    def _next_batch(self) -> list[Job]:
        with self.ready:
            while not self.queue and not self.closed:
                self.ready.wait()
            if self.closed:
                return []
            batch = [self.queue.popleft()]
            if not self.gather:
                return batch
            size, deadline = len(batch[0].images), time.monotonic() + self.wait_s
            while True:
                for job in [job for job in self.queue if job.key == batch[0].key]:
                    if size + len(job.images) <= self.max_batch:
                        self.queue.remove(job)
                        batch.append(job)
                        size += len(job.images)
                left = deadline - time.monotonic()
                if size >= self.max_batch or left <= 0 or self.closed:
                    return batch
                self.ready.wait(left)

    def _run(self) -> None:
        while batch := self._next_batch():
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]  # clients gone: skipped
            images = [image for job in batch for image in job.images]
            if not images:
                continue
            question, max_tokens = batch[0].key
            try:
                answers, probabilities = self.fakevlm.answer(images, question, max_tokens, len(images))
            except ShuttingDown:
                for job in batch:
                    job.future.set_exception(ApiError(503, "the server is shutting down", "shutting_down"))
                continue
            except Exception as error:  # noqa: BLE001 - a model failure: each waiting request answers 500
                log.exception("generation failed")
                for job in batch:
                    job.future.set_exception(error)
                continue
            start = 0
            for job in batch:
                end = start + len(job.images)
                job.future.set_result((answers[start:end], probabilities[start:end], len(images)))
                start = end


def model_context(fakevlm: Any) -> int:
    """The language model's positions: prompt and answer together must fit."""
    config = fakevlm.model.config
    return getattr(config, "text_config", config).max_position_embeddings


class PromptCounter:
    """Token counts on the event loop, with a tokenizer of their own: the batcher's changes its padding."""

    def __init__(self, processor: Any, context: int):
        self.processor, self.context = processor, context
        self.tokenizer = copy.deepcopy(processor.tokenizer)
        # no token is longer than this many characters: text past context * it cannot fit, uncounted
        self.longest_token = max(map(len, self.tokenizer.get_vocab()))
        # the processor expands the image placeholder into the image's tokens
        probe = build_prompt(processor, "")
        self.image_tokens = (len(processor(images=[Image.new("RGB", (8, 8))], text=[probe])["input_ids"][0])
                             - len(self.tokenizer(probe)["input_ids"]))

    def prompt_tokens(self, question: str, max_tokens: int) -> int:
        """The prompt's tokens, refused (400 naming the limit) when it and `max_tokens` exceed the context."""
        if len(question) > self.context * self.longest_token:
            raise ApiError(400, f"This model's maximum context length is {self.context} tokens: the prompt "
                                f"({len(question)} characters) is longer", "context_length_exceeded")
        tokens = len(self.tokenizer(build_prompt(self.processor, question))["input_ids"]) + self.image_tokens
        if tokens + max_tokens > self.context:
            raise ApiError(400, f"This model's maximum context length is {self.context} tokens. However, you "
                                f"requested {tokens + max_tokens} tokens ({tokens} in the messages, {max_tokens} in "
                                "the completion).", "context_length_exceeded")
        return tokens

    def answer_tokens(self, answer: str) -> int:
        # FakeVLM.answer returns text: re-tokenised as training wrote it (leading space, end of
        # sequence), it says whether generation stopped on its own or at max_tokens
        return len(self.tokenizer(answer_suffix(answer, self.processor), add_special_tokens=False)["input_ids"])


@dataclass
class Service:
    """The loaded detector, the request limits, the batcher and the counts that /stats reports."""

    detector: Detector
    model_id: str
    max_batch: int
    max_upload_bytes: int
    limits: ImageLimits
    batcher: Batcher
    counter: PromptCounter
    decoders: ThreadPoolExecutor  # bounded: concurrent requests cannot decode more images at once
    api_key: str | None
    allowed_hosts: set[str]
    page_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    started: int = field(default_factory=lambda: int(time.time()))
    requests: dict[str, int] = field(default_factory=lambda: {"detect": 0, "chat_completions": 0})

    async def decode(self, files: list[tuple[str, bytes]]) -> list[Image.Image | str]:
        return await asyncio.wrap_future(self.decoders.submit(decode_uploads, files, self.limits))

    async def generate(self, images: list[Image.Image], question: str, max_tokens: int,
                       response: Response) -> tuple[list[str], list[float]]:
        """Answers and fake probabilities; the response says how many images its batch had."""
        answers, probabilities, batch = await asyncio.wrap_future(self.batcher.submit(images, question, max_tokens))
        response.headers[BATCH_HEADER] = str(batch)
        return answers, probabilities

    def close(self, timeout: float) -> None:
        self.batcher.close(timeout)
        self.decoders.shutdown(wait=False, cancel_futures=True)


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


@router.post("/detect")
async def detect(request: Request, response: Response) -> Any:
    """One image: detect's object; several: a list, with `error` for each unreadable file."""
    service = service_of(request, "detect")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(400, "send the images as multipart/form-data, in fields named `file` or `files`",
                       "not_multipart")
    # python-multipart streams each file to a spooled temporary file; the body's size is capped by Guard
    async with request.form(max_files=service.max_batch + 1, max_fields=service.max_batch + 16) as form:
        uploads = [value for key, value in form.multi_items() if key in UPLOAD_FIELDS and isinstance(value, UploadFile)]
        if not uploads:
            raise ApiError(400, "no image: send one or more files in fields named `file` or `files`", "no_image")
        if len(uploads) > service.max_batch:
            raise ApiError(400, f"{len(uploads)} images: at most {service.max_batch} per request", "too_many_images")
        files = [(upload.filename or "upload", await upload.read()) for upload in uploads]
    images = await service.decode(files)
    readable = [image for image in images if not isinstance(image, str)]
    if not readable:
        raise ApiError(400, "; ".join(f"{name}: {error}" for (name, _), error in zip(files, images)), "unreadable_image")
    answers, probabilities = await service.generate(readable, service.detector.question,
                                                    service.detector.max_new_tokens, response)
    answered = iter(zip(answers, probabilities))
    results = [{"path": name, "error": image} if isinstance(image, str)
               else {"path": name, **verdict(*next(answered), service.detector.temperature)}
               for (name, _), image in zip(files, images)]
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


def image_bytes(url: str) -> bytes:
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        raise ApiError(400, "remote image URLs are not fetched: send the image inline as "
                            "data:image/<type>;base64,<data>", "remote_url_not_supported")
    header, _, data = url.partition(",")
    if scheme != "data" or not header.lower().endswith(";base64"):
        raise ApiError(400, "image_url must be a base64 data: URL (data:image/<type>;base64,<data>)", "invalid_image_url")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as error:
        raise ApiError(400, f"image_url: invalid base64: {error}", "invalid_image_url") from None


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, response: Response) -> dict[str, Any]:
    service = service_of(request, "chat_completions")
    # a web page can send text/plain or a form anywhere without asking first; JSON needs a CORS preflight
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "send the request as Content-Type: application/json", "unsupported_media_type")
    chat = parse_chat_request(await request.body())
    if chat.model is not None and chat.model != service.model_id:
        raise ApiError(404, f"The model `{chat.model}` does not exist: this server has `{service.model_id}`",
                       "model_not_found")
    if chat.stream:
        raise ApiError(400, "stream: true is not supported; ask with stream: false", "stream_not_supported")
    url, question = image_and_question(chat)
    question = question or service.detector.question
    default_tokens = service.detector.max_new_tokens  # the answer length the model was trained for, also the cap
    max_tokens = min(chat.max_completion_tokens or chat.max_tokens or default_tokens, default_tokens)
    prompt_tokens = service.counter.prompt_tokens(question, max_tokens)
    [image] = await service.decode([("image_url", image_bytes(url))])
    if isinstance(image, str):
        raise ApiError(400, f"image_url: {image}", "unreadable_image")
    [answer], _ = await service.generate([image], question, max_tokens, response)
    written = service.counter.answer_tokens(answer)
    completion_tokens = min(written, max_tokens)
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": service.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "logprobs": None,
                         "finish_reason": "length" if written > max_tokens else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


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
async def page(request: Request) -> HTMLResponse:
    service = service_of(request)
    token = "" if service.api_key else service.page_token  # with a key, the page asks for it instead
    return HTMLResponse(PAGE.replace("{token}", token), headers=PAGE_HEADERS)


def error_body(error: ApiError) -> dict[str, Any]:
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    return {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}


async def api_error_response(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, HTTPException):  # Starlette's own: no such route (404), method (405), bad form (400)
        error = ApiError(error.status_code, str(error.detail), {404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "invalid_request"))
    elif not isinstance(error, ApiError):  # a bug or a model failure: its details go to the server's log
        error = ApiError(500, "internal error", "internal_error")
    return JSONResponse(error_body(error), status_code=error.status)


def request_host(scope: Scope) -> str:
    """The Host header's name, without the port (IPv6 literals in brackets)."""
    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """Before any route: the Host allow-list, the API key or page token, the body's size limit."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self.check(scope)
        except ApiError as error:
            return await JSONResponse(error_body(error), status_code=error.status)(scope, receive, send)
        await self.app(scope, self.capped(receive), send)

    def check(self, scope: Scope) -> None:
        service, headers = self.service, dict(scope["headers"])
        host = request_host(scope)
        if host not in service.allowed_hosts:
            raise ApiError(400, f"Host {host!r} is not served here (--allowed-host)", "invalid_host")
        path = scope["path"]
        if path not in OPEN_PATHS:
            if service.api_key:
                given = headers.get(b"authorization", b"").decode("latin-1")
                if not hmac.compare_digest(given.encode(), f"Bearer {service.api_key}".encode()):
                    raise ApiError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`",
                                   "invalid_api_key")
            elif path == "/detect" and not hmac.compare_digest(headers.get(TOKEN_HEADER.encode(), b""),
                                                               service.page_token.encode()):
                raise ApiError(403, f"uploads need the page's token in the {TOKEN_HEADER} header (or start the "
                                    "server with --api-key)", "missing_token")
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            raise ApiError(400, "Content-Length is not a number", "invalid_request") from None
        if declared > service.max_upload_bytes:
            raise self.too_large()

    def too_large(self) -> ApiError:
        return ApiError(413, f"request body larger than {self.service.max_upload_bytes / 1e6:g} MB", "request_too_large")

    def capped(self, receive: Receive) -> Receive:
        """`receive`, refusing once the body passes the limit (chunked bodies declare no length)."""
        seen = 0

        async def receive_capped() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.service.max_upload_bytes:
                raise self.too_large()
            return message

        return receive_capped


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        service.close(timeout=5)

    app = FastAPI(title="fakevlm", summary="Is an image real or AI-generated, and why", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)  # no third-party scripts, no second page
    app.state.service = service
    app.include_router(router)
    app.add_middleware(Guard, service=service)
    app.add_exception_handler(ApiError, api_error_response)
    app.add_exception_handler(HTTPException, api_error_response)
    app.add_exception_handler(Exception, api_error_response)
    return app


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def check_exposure(args: Namespace) -> None:
    """Refuse to listen beyond this machine without an API key, unless told to (--allow-no-key)."""
    if not is_loopback(args.host) and not args.api_key and not args.allow_no_key:
        raise SystemExit(f"fakevlm serve: --host {args.host} exposes the server beyond this machine: give it an "
                         "--api-key (or FAKEVLM_API_KEY), or pass --allow-no-key to serve without one")


def model_identity(model: str) -> str:
    """What /v1/models, /health and each completion call the model: the registered name
    (models:/NAME@alias or /version) or the folder's name, never a path on disk."""
    if model.startswith("models:/"):
        return model.removeprefix("models:/").split("@")[0].split("/")[0]
    return Path(model).resolve().name


def allowed_hosts(args: Namespace) -> set[str]:
    named = {args.host.strip("[]").lower()} - {"0.0.0.0", "::", ""}
    return LOOPBACK_NAMES | named | {host.lower() for host in args.allowed_host or []}


def build_service(detector: Detector, args: Namespace) -> Service:
    processor = detector.fakevlm.processor
    sizes = processor.image_processor
    side = min(dict(getattr(sizes, "crop_size", None) or sizes.size).values())  # what the processor resizes to
    limits = ImageLimits(int(args.max_image_mpixels * 1e6), args.max_aspect_ratio,
                         int(args.max_request_mpixels * 1e6), side)
    return Service(detector=detector, model_id=model_identity(args.model), max_batch=args.max_batch,
                   max_upload_bytes=int(args.max_upload_mb * 1e6), limits=limits,
                   batcher=Batcher(detector.fakevlm, args.max_batch, args.batch_wait_ms / 1000, args.batching),
                   counter=PromptCounter(processor, model_context(detector.fakevlm)),
                   decoders=ThreadPoolExecutor(args.decode_workers, thread_name_prefix="fakevlm-decode"),
                   api_key=args.api_key or None, allowed_hosts=allowed_hosts(args))


class StoppingServer(uvicorn.Server):
    """Stops on the first SIGTERM/SIGINT: waiting requests are refused (503) and the running batch
    ends at its next forward pass, so uvicorn's graceful shutdown does not wait for queued work."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        threading.Thread(target=self.on_exit, daemon=True).start()  # not in the signal handler: it takes a lock


def run_server(detector: Detector, args: Namespace) -> None:
    # refuse at PIL's warning threshold (89 Mpixels) rather than only at twice it, its error
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    service = build_service(detector, args)
    config = uvicorn.Config(create_app(service), host=args.host, port=args.port,
                            timeout_graceful_shutdown=args.shutdown_timeout)
    StoppingServer(config, lambda: service.close(timeout=args.shutdown_timeout)).run()


STYLE = """
  body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  #preview { display: block; max-width: 100%; max-height: 20rem; min-width: 8rem; margin: 1rem 0; border: 1px solid #ccc; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .4rem 1rem; }
  dt { font-weight: 600; }
  dd { margin: 0; }
  #verdict { font-weight: 700; text-transform: uppercase; }
  .verdict-fake { color: #b00020; }
  .verdict-real { color: #1b7f3b; }
  #error { color: #b00020; }
"""

SCRIPT = """
const $ = (id) => document.getElementById(id);
const token = document.querySelector('meta[name="fakevlm-token"]').content;
$("key-row").hidden = Boolean(token);
$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  for (const id of ["verdict", "probability", "explanation", "error"]) $(id).textContent = "";
  $("result").hidden = true;
  if (!file) return;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("status").textContent = "Asking the model\\u2026";
  const form = new FormData();
  form.append("file", file);
  const headers = token ? { "X-FakeVLM-Token": token } : { "Authorization": "Bearer " + $("key").value };
  try {
    const result = await (await fetch("/detect", { method: "POST", body: form, headers })).json();
    if (result.error) throw new Error(result.error.message);
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
"""


def csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# only this page's own script and style, images from the chosen file, requests to this server
PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; script-src {csp_hash(SCRIPT)}; style-src {csp_hash(STYLE)}; "
                               "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="fakevlm-token" content="{token}">
<title>fakevlm: real or AI-generated?</title>
<style>""" + STYLE + """</style>
</head>
<body>
<h1>Real or AI-generated?</h1>
<p>Choose an image: the model says whether it is real or fake, and why.</p>
<p id="key-row"><label>API key <input type="password" id="key" autocomplete="off"></label></p>
<input type="file" id="file" accept="image/*">
<p id="status" role="status"></p>
<p id="error" role="alert"></p>
<img id="preview" alt="the chosen image" hidden>
<dl id="result" hidden>
  <dt>Verdict</dt><dd id="verdict"></dd>
  <dt>Fake probability</dt><dd id="probability"></dd>
  <dt>Explanation</dt><dd id="explanation"></dd>
</dl>
<script>""" + SCRIPT + """</script>
</body>
</html>
"""
