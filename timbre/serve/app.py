"""The ASGI app: the HTTP API under ``/api/v1`` and the instrument page.

- ``GET  /api/v1/timbres``   the default corners, the bundled timbres, weightings and limits (JSON);
- ``POST /api/v1/note``      ``{"x", "y", "pitch", "velocity", "seconds", "corners", "weighting"}`` ->
  ``audio/wav`` (16-bit PCM, mono, the model's rate);
- ``POST /api/v1/embedding`` the same body -> the blended embedding ``[frames, dim]`` as JSON;
- ``GET  /api/v1/status``    cache and batching counters (JSON);
- ``GET  /``                 the page (``static/``), which needs nothing beyond this server.

Errors are JSON ``{"error": message, "status": code}``: 400 malformed JSON, 404 unknown path,
405 wrong method, 413 body over ``MAX_BODY_BYTES``, 415 not ``application/json``, 422 a value out of
range or an unknown corner; 500 a bug (logged). The app writes nothing to disk: its caches live in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from timbre.errors import TimbreError
from timbre.serve.batching import DEFAULT_MAX_BATCH, LRUCache, NoteBatcher, wav_bytes
from timbre.serve.instrument import Instrument, NoteRequest

STATIC_DIR = Path(__file__).resolve().parent / "static"
API = "/api/v1"
# A valid request is about 200 bytes; anything much larger is a mistake or an attack.
MAX_BODY_BYTES = 4096
# About 500 two-second notes (64 kB each).
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
# The page talks to this server only: the browser refuses any other origin.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
]

log = logging.getLogger(__name__)


class NoteService:
    """Answers note requests from the LRU cache, from an identical request in flight, or the decoder.

    Args:
        instrument: the pad (corners, blends, validation).
        cache_bytes: size of the WAV cache.
        max_batch: most notes per decoder pass.
    """

    def __init__(self, instrument: Instrument, cache_bytes: int, max_batch: int) -> None:
        self.instrument = instrument
        self.cache = LRUCache(cache_bytes)
        self.batcher = NoteBatcher(instrument.model, max_batch)
        self._in_flight: dict[NoteRequest, Future] = {}
        self._lock = threading.Lock()
        centre = instrument.parse_request({"x": 0.5, "y": 0.5})
        self.batcher.warm_up(instrument.blend(centre), centre.pitch, centre.seconds, centre.velocity)

    async def note(self, request: NoteRequest) -> tuple[bytes, str]:
        """The WAV file of ``request`` and where it came from: ``"hit"``, ``"shared"`` or ``"miss"``."""
        cached = self.cache.get(request)
        if cached is not None:
            return cached, "hit"
        with self._lock:
            future = self._in_flight.get(request)
            origin = "shared" if future is not None else "miss"
            if future is None:
                embedding = self.instrument.blend(request)
                future = self.batcher.submit(embedding, request.pitch, request.seconds, request.velocity)
                self._in_flight[request] = future
        try:
            audio = await asyncio.wrap_future(future)
        finally:
            with self._lock:
                if self._in_flight.get(request) is future:
                    del self._in_flight[request]
        body = wav_bytes(audio, self.instrument.model.sample_rate)
        self.cache.put(request, body)
        return body, origin

    def status(self) -> dict[str, Any]:
        sizes = self.batcher.batch_sizes
        return {
            "model": self.instrument.model.name,
            "cache": {
                "entries": len(self.cache),
                "bytes": self.cache.size,
                "hits": self.cache.hits,
                "misses": self.cache.misses,
            },
            "decoder": {
                "passes": len(sizes),
                "notes": sum(sizes),
                "largest_batch": max(sizes, default=0),
                "cpu_seconds": round(self.batcher.cpu_seconds, 4),
            },
        }


def create_app(
    instrument: Instrument,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The instrument's ASGI app.

    Args:
        instrument: the model and its pad.
        cache_bytes: memory given to the cache of synthesized notes.
        max_batch: most concurrent notes decoded in one pass.
        allowed_hosts: ``Host`` headers to accept (e.g. ``["127.0.0.1", "localhost"]``, which stops
            DNS-rebinding pages from reaching a local server); None accepts any.
    """
    service = NoteService(instrument, cache_bytes, max_batch)

    async def timbres(request: Request) -> Response:
        return JSONResponse(instrument.describe())

    async def note(request: Request) -> Response:
        started = time.perf_counter()
        note_request = instrument.parse_request(await _read_json(request))
        body, origin = await service.note(note_request)
        milliseconds = (time.perf_counter() - started) * 1000
        headers = {"x-timbre-cache": origin, "server-timing": f"synth;dur={milliseconds:.1f}"}
        return Response(body, media_type="audio/wav", headers=headers)

    async def embedding(request: Request) -> Response:
        note_request = instrument.parse_request(await _read_json(request))
        blended = instrument.blend(note_request)
        return JSONResponse(
            {
                "x": note_request.x,
                "y": note_request.y,
                "corners": list(note_request.corners),
                "weighting": note_request.weighting,
                "weights": instrument.weights(note_request).tolist(),
                "sample_rate": blended.sample_rate,
                "hop_length": blended.hop_length,
                "release_frame": blended.release_frame,
                "attack_frames": blended.attack_frames,
                "shape": list(blended.tensor.shape),
                "embedding": blended.tensor.tolist(),
            }
        )

    async def status(request: Request) -> Response:
        return JSONResponse(service.status())

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, service.batcher.close)

    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route(f"{API}/timbres", timbres, methods=["GET"]),
            Route(f"{API}/note", note, methods=["POST"]),
            Route(f"{API}/embedding", embedding, methods=["POST"]),
            Route(f"{API}/status", status, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, TimbreError: _invalid_value, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


async def _read_json(request: Request) -> Any:
    """The request's JSON body, refused with 415, 413 or 400 when it is not a small JSON document."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        # Also keeps other web pages out: a cross-origin JSON POST needs a CORS preflight we never grant.
        raise HTTPException(415, "the request body must be JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body of {declared} bytes; the limit is {MAX_BODY_BYTES}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body over the limit of {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"the request body is not valid JSON ({error})") from None
    except RecursionError:  # "[[[[..." within the size limit
        raise HTTPException(400, "the request body nests JSON too deeply") from None


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail, "status": error.status_code}, error.status_code, headers=error.headers)


async def _invalid_value(request: Request, error: Exception) -> Response:
    return JSONResponse({"error": str(error), "status": 422}, 422)


async def _internal_error(request: Request, error: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"error": f"internal error ({type(error).__name__}); see the server log", "status": 500}, 500)


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response (pure ASGI: no per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)
