"""python -m pyeagle.server: an OpenAI-compatible HTTP server over one Engine.

    python -m pyeagle.server [-m T.gguf] [-md HEAD.gguf | --no-draft] [--host 127.0.0.1] [--port 8080]
                             [-c N] [-t N] [-ngl N] [--api-key KEY] [--chat-template T] [tree flags]

Endpoints: POST /v1/chat/completions, POST /v1/completions (streamed as server-sent events ending
in `data: [DONE]`), GET /v1/models, GET /health. Responses are OpenAI's shapes (pyeagle/openai_api.py)
with an extension field `pyeagle` (tau, tokens/s). Errors are OpenAI's shape too:
{"error": {"message", "type", "param", "code"}} with 400 (bad request, context exceeded), 401
(API key), 404, 503 (queue full), 504 (request timeout).

One engine serves the requests one at a time, in arrival order (a FIFO queue of --queue places;
one more gets 503). A request checks its input on arrival, before it queues. A request that
continues the previous conversation reuses its KV prefix. A client that disconnects, streaming or
not, has its generation cancelled within one round; so does one past --timeout seconds. The model
is fixed at start: nothing a request sends names a file.

Built on FastAPI (pydantic request models), uvicorn and sse-starlette, as llama-cpp-python's
server is: `pip install pyeagle[server]`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import math
import queue
import sys
import threading
import time
from typing import Any, List, Optional, Union

from . import openai_api
from .engine import Engine, add_tree_args, tree_kwargs

log = logging.getLogger("pyeagle.server")

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
    from sse_starlette.sse import EventSourceResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - the message is the point
    raise SystemExit(f"pyeagle.server needs FastAPI, uvicorn and sse-starlette: pip install 'pyeagle[server]' ({e})")

Number = Union[StrictInt, StrictFloat]


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --- request models: OpenAI's fields that pyeagle honours; others are ignored, as llama-cpp-python does

class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: Optional[StrictStr] = None  # reported back; never selects or loads anything
    max_tokens: Optional[StrictInt] = None
    temperature: Number = 1.0
    top_p: Number = 1.0
    seed: Optional[StrictInt] = None
    stop: Optional[Union[StrictStr, List[StrictStr]]] = None
    stream: StrictBool = False
    stream_options: Optional[dict] = None
    n: StrictInt = 1


class ChatRequest(_Request):
    messages: List[dict] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = None


class CompletionRequest(_Request):
    prompt: Union[StrictStr, List[StrictInt], List[StrictStr]]
    max_tokens: Optional[StrictInt] = 16


# --- one engine, one worker thread, a FIFO queue

class Job:
    """One request in the queue: the worker runs it and hands its items (chunks, the response, DONE
    or an exception) to the request's event loop in batches. A streamed chunk waits up to
    `interval` seconds after the previous batch so that fast rounds share one wake-up of the event
    loop, one socket write, one chunk of text (openai_api.merge_text_chunks) and one of the
    client's reads; the first chunk after a pause, and the end, go at once."""

    def __init__(self, prepared: openai_api.Prepared, streamed: bool, loop: asyncio.AbstractEventLoop,
                 interval: float = 0.0):
        self.prepared, self.streamed, self.loop, self.interval = prepared, streamed, loop, interval
        self.out: asyncio.Queue = asyncio.Queue()  # lists of items
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._pending: list = []
        self._armed = False
        self._last = -math.inf  # when the last batch with text left (the loop's clock)

    def put(self, item: Any, last: bool = False) -> None:
        """From the worker thread; `last`: the end of the request's items, sent without waiting."""
        with self._lock:
            self._pending.append(item)
            wake = last or not self._armed
            self._armed = True
        if wake:
            self.loop.call_soon_threadsafe(self._flush if last else self._arm)

    def _arm(self) -> None:  # on the loop
        wait = self._last + self.interval - self.loop.time()
        if wait > 0:
            self.loop.call_later(wait, self._flush)
        else:
            self._flush()

    def _flush(self) -> None:  # on the loop
        with self._lock:
            items, self._pending, self._armed = self._pending, [], False
        if items:
            if any(openai_api.text_of(i) is not None for i in items):  # the role chunk does not hold back the first text
                self._last = self.loop.time()
            self.out.put_nowait(items)


DONE = object()


class Worker:
    def __init__(self, engine: Engine, max_queue: int):
        self.engine = engine
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.current: Job | None = None
        self.lock = threading.Lock()
        self.served = self.n_cancelled = 0  # finished requests; of them cancelled (client gone, timeout)
        self.thread = threading.Thread(target=self.run, name="pyeagle-server-worker", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(503, "the server is busy: its request queue is full, try again later",
                           "server_error", "queue_full") from None

    def cancel(self, job: Job) -> None:
        job.cancelled.set()
        with self.lock:
            if self.current is job:
                self.engine.cancel()

    def stop(self) -> None:
        """Cancels what waits and what runs, then ends the thread (never blocks on a full queue)."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancelled.set()
                job.put(DONE, last=True)
        with self.lock:
            if self.current is not None:
                self.current.cancelled.set()
                self.engine.cancel()
        try:
            self.jobs.put_nowait(None)
        except queue.Full:  # a request queued meanwhile: the worker stops after it, cancelled
            pass

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if job.cancelled.is_set():
                job.put(DONE, last=True)
                continue
            with self.lock:
                self.current = job
            try:
                p, cancelled = job.prepared, job.cancelled.is_set
                if job.streamed:
                    for chunk in openai_api.stream_chunks(self.engine, p, cancelled):
                        job.put(chunk)
                else:
                    job.put(openai_api.respond(self.engine, p, cancelled))
                job.put(DONE, last=True)
            except Exception as e:  # noqa: BLE001 - handed to the request, which answers with it
                log.exception("generation failed")
                job.put(e, last=True)
            finally:
                with self.lock:
                    self.current = None
                self.served += 1
                self.n_cancelled += job.cancelled.is_set()


# --- the app

def to_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def create_app(engine: Engine, api_key: str | None = None, max_queue: int = 16, timeout: float = 600.0,
               stream_interval: float = 0.05) -> FastAPI:
    worker = Worker(engine, max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        worker.stop()  # shutting down: cancel the queued and the running generations

    app = FastAPI(title="pyeagle", description="OpenAI-compatible server over EAGLE speculative decoding",
                  lifespan=lifespan)
    app.state.worker = worker
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError):
        return JSONResponse(error_body(e.message, e.type, e.code, e.param), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx", {})
            return JSONResponse(error_body(f"malformed JSON: {ctx.get('error', 'cannot parse the body')}",
                                           "invalid_request_error"), status_code=400)
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse(error_body(msg, "invalid_request_error", None, where or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse(error_body("invalid or missing API key (Authorization: Bearer ...)",
                                               "invalid_request_error", "invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": worker.jobs.qsize(), "busy": worker.current is not None,
                "served": worker.served, "cancelled": worker.n_cancelled}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": created,
                                            "owned_by": "pyeagle", "pyeagle": {"draft": engine.draft_path}}]}

    async def prepare(fn, *args, **kw) -> openai_api.Prepared:
        try:  # tokenizing and rendering the template can take a moment: off the event loop
            return await run_in_threadpool(fn, engine, *args, **kw)
        except openai_api.ContextLengthError as e:
            raise ApiError(400, str(e), code=e.code, param="max_tokens") from None
        except ValueError as e:  # includes the chat template's TemplateError
            raise ApiError(400, str(e)) from None

    def common(req: _Request) -> dict:
        if req.n != 1:
            raise ApiError(400, "n: only n = 1 is supported", param="n")
        return dict(temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=req.stop,
                    stream_options=req.stream_options, model=req.model)

    def event(obj: Any) -> bytes:  # one server-sent event, as sse-starlette writes it
        return f"data: {obj if isinstance(obj, str) else to_json(obj)}\r\n\r\n".encode()

    async def run(request: Request, p: openai_api.Prepared, streamed: bool):
        job = Job(p, streamed, asyncio.get_running_loop(), stream_interval)
        worker.submit(job)
        deadline = time.monotonic() + timeout

        if streamed:
            async def events():
                finished = False
                try:
                    while not finished:
                        left = deadline - time.monotonic()
                        try:
                            if left <= 0:
                                raise asyncio.TimeoutError
                            batch = await asyncio.wait_for(job.out.get(), left)
                        except asyncio.TimeoutError:
                            yield event(error_body(f"request timed out after {timeout:g} s", "timeout", "timeout"))
                            break
                        out = []  # a batch's events go in one write, its text in one chunk
                        for item in openai_api.merge_text_chunks(batch):
                            if item is DONE or isinstance(item, Exception):
                                finished = True
                                if item is not DONE:
                                    out.append(event(error_body(str(item), "server_error")))
                                break
                            out.append(event(item))
                        if out:
                            yield b"".join(out)
                    yield event("[DONE]")
                finally:  # the client went away (this task is cancelled), or the time ran out
                    if not finished:
                        worker.cancel(job)

            return EventSourceResponse(events(), ping=15, send_timeout=timeout)

        batch: list = []
        while not batch:  # wait for the result, and notice a client that went away meanwhile
            left = deadline - time.monotonic()
            if left <= 0:
                worker.cancel(job)
                raise ApiError(504, f"request timed out after {timeout:g} s", "timeout", "timeout")
            try:
                batch = await asyncio.wait_for(job.out.get(), min(0.25, left))
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    worker.cancel(job)
                    return JSONResponse(error_body("client disconnected", "cancelled"), status_code=499)
        item = batch[0]
        if isinstance(item, Exception):
            raise ApiError(500, f"generation failed: {item}", "server_error")
        if item is DONE or item is None:
            raise ApiError(500, "generation ended without a result", "server_error")
        return item

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        p = await prepare(openai_api.prepare_chat_completion, req.messages, max_tokens=max_tokens, **common(req))
        return await run(request, p, req.stream)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise ApiError(400, "prompt: only one prompt per request is supported", param="prompt")
            prompt = prompt[0]
        p = await prepare(openai_api.prepare_completion, prompt, max_tokens=req.max_tokens, **common(req))
        return await run(request, p, req.stream)

    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyeagle.server", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", help="target GGUF (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("-md", "--model-draft", help="EAGLE head GGUF (default: the shipped head of the default model)")
    ap.add_argument("--no-draft", action="store_true", help="plain decoding, no head")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    ap.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size (default 4096)")
    ap.add_argument("-t", "--threads", type=int, default=0, help="CPU threads (default 0: all)")
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=0, help="layers on the GPU (-1: all; default 0)")
    ap.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ requests")
    ap.add_argument("--chat-template", help="jinja template text or a file with it (default: the model's, else ChatML)")
    ap.add_argument("--queue", type=int, default=16, help="requests waiting at most; one more gets 503 (default 16)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take, queued and running "
                                                                 "(default 600)")
    ap.add_argument("--stream-interval", type=float, default=0.05,
                    help="seconds streamed text may wait to share a chunk with the next rounds' (default 0.05; "
                         "0: one write per round)")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add_tree_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.no_draft and args.model_draft:
        ap.error("--no-draft and -md exclude each other")
    # "default": the shipped head with the embedded default target; with -m and no -md, none
    draft: Optional[str] = None if args.no_draft else (args.model_draft or "default")
    try:
        engine = Engine(args.model, draft=draft, n_ctx=args.ctx_size, n_threads=args.threads,
                        n_gpu_layers=args.n_gpu_layers, chat_template=args.chat_template,
                        **{k: v for k, v in tree_kwargs(args).items() if v is not None})
        engine.chat_template  # a template that does not parse fails now, not on the first request
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    warm = engine.warm_up()  # the draft policy's cost measurement, here rather than in the first request
    if warm:
        log.info("verify costs measured in %.1f s", warm)
    log.info("serving %s%s on http://%s:%d/v1", engine.model_name,
             f" with {engine.draft_path}" if engine.draft_path else " (no draft head)", args.host, args.port)
    app = create_app(engine, api_key=args.api_key, max_queue=args.queue, timeout=args.timeout,
                     stream_interval=args.stream_interval)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
