"""The HTTP API and the page: FastAPI over a :class:`~jemc_infer.serve.library.Library`.

Every error is JSON ``{"error": "what | got | expected"}`` with a 4xx status (a 5xx only for a bug
or an index that broke under the service): validation errors, unknown routes and wrong methods
included. The body-size limit and the bearer token are checked in one ASGI middleware, before
FastAPI reads anything.
"""

from __future__ import annotations

import hmac
import math
import mimetypes
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jemc_infer import __version__
from jemc_infer.errors import IndexCorruptError, InputError, JemcError, SettingError
from jemc_infer.query import Hit
from jemc_infer.serve.library import Forbidden, Library, NotFound

TOKEN_COOKIE = "jemc_token"
OPEN_PATHS = ("/healthz",)  # answered without the token (a load balancer's probe)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``serve``'s options; every limit answers 4xx when passed)."""

    max_body_bytes: int = 64 * 1024  # a request body (a batch of texts as JSON)
    max_text_chars: int = 1000  # one text
    max_batch: int = 64  # texts in one request
    max_k: int = 100  # results per text
    max_thumbnail_width: int = 640  # pixels

    def __post_init__(self) -> None:
        bad = [f"{name}={value!r}" for name, value in vars(self).items() if not (isinstance(value, int) and value >= 1)]
        if bad:
            raise InputError(f"limits | {', '.join(bad)} | expected integers >= 1")


class SearchRequest(BaseModel):
    """One text (``text``) or a batch (``texts``), ``k`` results each, optional fusion weights."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="One sentence (or use texts).")
    texts: list[str] | None = Field(None, description="A batch of sentences, searched together (or use text).")
    k: int = Field(10, description="Results per text.")
    weights: dict[str, float] | None = Field(None, description="Fusion weight by space name, e.g. {\"activity\": 0.5}.")


class Moment(BaseModel):
    start: float
    end: float


class HitOut(BaseModel):
    rank: int
    id: int
    path: str
    score: float
    duration: float | None
    moment: Moment | None  # the best-matching window, where the index keeps per-window rows
    file: str
    thumbnail: str


class ResultOut(BaseModel):
    text: str
    hits: list[HitOut]


class SearchResponse(BaseModel):
    results: list[ResultOut]
    warnings: list[str]


class ErrorOut(BaseModel):
    error: str  # what | got | expected


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _hit_out(h: Hit) -> HitOut:
    moment = Moment(start=h.moment[0], end=h.moment[1]) if h.moment is not None else None
    t = moment.start if moment is not None else 0.0
    return HitOut(rank=h.rank, id=h.id, path=h.path, score=h.score, duration=h.duration, moment=moment,
                  file=f"/videos/{h.id}/file", thumbnail=f"/videos/{h.id}/thumbnail?t={t:g}")


def create_app(library: Library, limits: Limits = Limits(), token: str | None = None) -> FastAPI:
    """The service's ASGI app.

    Args:
        library: The opened bundle, engine and index (shared by every request; closed by the caller).
        limits: The request limits.
        token: When set, every endpoint but ``/healthz`` needs ``Authorization: Bearer TOKEN``
            (or the cookie that ``GET /?token=TOKEN`` sets, so the page's images and video load).
    """
    errors = {400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
              413: {"model": ErrorOut}, 422: {"model": ErrorOut}}
    app = FastAPI(title="jemc-infer", version=__version__, responses=errors,  # type: ignore[arg-type]
                  description="Search a video collection with sentences (JEMC joint embeddings).")
    app.state.library, app.state.limits = library, limits
    app.add_middleware(_Guard, max_body=limits.max_body_bytes, token=token)
    _errors(app)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        snap = library.snapshot()
        return {"status": "ok", "videos": len(snap.videos), "engine": library.engine_why}

    @app.post("/search", response_model=SearchResponse)
    def search(req: SearchRequest) -> SearchResponse:
        texts = _texts(req, limits)
        bad = {n: w for n, w in (req.weights or {}).items() if not math.isfinite(w)}
        if bad:
            raise InputError(f"weights | {bad} | expected finite numbers >= 0")
        try:
            hits, warnings = library.search(texts, req.k, req.weights)
        except SettingError as err:
            raise InputError(f"weights | {err.got} | expected {err.expected}") from None
        return SearchResponse(results=[ResultOut(text=t, hits=[_hit_out(h) for h in rows]) for t, rows in zip(texts, hits, strict=True)],
                              warnings=warnings)

    @app.get("/videos/{video_id}/similar", response_model=ResultOut)
    def similar(video_id: int, k: int = Query(10, description="Results."),
                weights: str | None = Query(None, description="Fusion weights, e.g. object=1,activity=0.5.")) -> ResultOut:
        """More like this: the videos nearest to this one (its own row as the question; itself left out)."""
        if not 1 <= k <= limits.max_k:
            raise InputError(f"k | {k} | expected 1 to {limits.max_k}")
        try:
            hits = library.like(video_id, k, weights)
        except SettingError as err:
            raise InputError(f"weights | {err.got} | expected {err.expected}") from None
        return ResultOut(text=f"like video {video_id}", hits=[_hit_out(h) for h in hits])

    @app.get("/videos/{video_id}")
    def video(video_id: int) -> dict[str, Any]:
        v = library.video(video_id)
        return {"id": v.id, "path": v.path, "duration": v.duration, "size": v.size, **library.details(video_id),
                "file": f"/videos/{v.id}/file", "thumbnail": f"/videos/{v.id}/thumbnail?t=0"}

    @app.get("/videos/{video_id}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}, "description": "A JPEG of the frame at t."}})
    def thumbnail(video_id: int, t: float = Query(0.0, description="Seconds since the first frame."),
                  width: int = Query(320, description="Largest width in pixels.")) -> Response:
        if not t >= 0 or t == float("inf"):
            raise InputError(f"t | {t!r} | expected seconds >= 0")
        if not 16 <= width <= limits.max_thumbnail_width:
            raise InputError(f"width | {width} | expected 16 to {limits.max_thumbnail_width}")
        jpeg = library.thumbnail(video_id, t, width)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/videos/{video_id}/file", response_class=FileResponse,
             responses={200: {"content": {"video/*": {}}}, 206: {"description": "The requested byte range."}})
    def file(video_id: int) -> FileResponse:
        path = library.file(video_id)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media)  # Range: 206 with the bytes asked for (Starlette)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(token_param: str | None = Query(None, alias="token")) -> Response:
        if token_param is not None:  # the guard checked it: keep it as a cookie and drop it from the address bar
            resp = RedirectResponse("/", status_code=303)
            resp.set_cookie(TOKEN_COOKIE, token_param, httponly=True, samesite="strict")
            return resp
        return HTMLResponse(_asset("index.html"))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        media = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in media:  # a fixed list: nothing else of the package is reachable
            raise NotFound(f"static | {name!r} | expected one of {sorted(media)}")
        return Response(_asset(name), media_type=media[name])

    return app


def _texts(req: SearchRequest, limits: Limits) -> list[str]:
    if (req.text is None) == (req.texts is None):
        raise InputError("search | " + ("both text and texts" if req.text is not None else "no text") +
                         " | expected exactly one of text (a sentence) or texts (a list of sentences)")
    texts = [req.text] if req.text is not None else list(req.texts or [])
    if not texts:
        raise InputError("texts | an empty list | expected 1 or more sentences")
    if len(texts) > limits.max_batch:
        raise InputError(f"texts | {len(texts)} sentences | expected at most {limits.max_batch} per request")
    for i, t in enumerate(texts):
        if len(t) > limits.max_text_chars:
            raise InputError(f"text {i + 1} | {len(t)} characters | expected at most {limits.max_text_chars}")
    if not 1 <= req.k <= limits.max_k:
        raise InputError(f"k | {req.k} | expected 1 to {limits.max_k}")
    return texts


def _asset(name: str) -> bytes:
    return (resources.files("jemc_infer.serve") / "static" / name).read_bytes()


def _errors(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    def not_found(request: Request, err: NotFound) -> JSONResponse:
        return error(404, str(err))

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, err: Forbidden) -> JSONResponse:
        return error(403, str(err))

    @app.exception_handler(IndexCorruptError)
    def corrupt(request: Request, err: IndexCorruptError) -> JSONResponse:
        return error(503, str(err))

    @app.exception_handler(JemcError)
    def bad_input(request: Request, err: JemcError) -> JSONResponse:
        return error(400, str(err))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        where = ".".join(loc[1:]) if len(loc) > 1 and loc[0] in ("body", "path", "query") else ".".join(loc) or "request"
        got = first.get("input", "nothing")
        got_text = repr(got)[:80] if not isinstance(got, dict | list | bytes) else type(got).__name__
        expected = first.get("msg", "a valid request").removeprefix("Input should be ").removeprefix("Value error, ")
        if first.get("type") == "json_invalid" or isinstance(got, bytes):
            where, got_text, expected = "body", "not a JSON object", 'a JSON object such as {"text": "a man cooking", "k": 10}'
        elif first.get("type") == "extra_forbidden":
            expected = f"only the fields {sorted(SearchRequest.model_fields)}"
        return error(422, f"{where} | {got_text} | expected {expected}")

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 404:
            message = f"path | {request.url.path} | expected /, /search, /videos/ID[/file|/thumbnail], /healthz or /docs"
        elif err.status_code == 405:
            message = f"method | {request.method} {request.url.path} | expected {err.headers.get('Allow', 'another method') if err.headers else 'another method'}"
        else:
            message = f"request | {err.detail} | expected a valid request"
        return error(err.status_code, message)

    @app.exception_handler(Exception)
    def bug(request: Request, err: Exception) -> JSONResponse:  # a bug: no traceback to the client
        return error(500, f"server | {type(err).__name__} | expected no error: please report it")


class _Guard:
    """The bearer token and the body-size limit, before any route reads the request."""

    def __init__(self, app: ASGIApp, max_body: int, token: str | None) -> None:
        self.app, self.max_body, self.token = app, max_body, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorised(scope):
            await error(401, "authorization | missing or wrong token | expected the header `Authorization: Bearer TOKEN` "
                             "(or open /?token=TOKEN in a browser)")(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(length.decode("latin-1"), scope, receive, send)
            return
        body, more = b"", True
        while more and scope["method"] in ("POST", "PUT", "PATCH"):
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await self._too_large(f"more than {self.max_body}", scope, receive, send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay if scope["method"] in ("POST", "PUT", "PATCH") else receive, _json_range_errors(scope, send))

    async def _too_large(self, got: str, scope: Scope, receive: Receive, send: Send) -> None:
        await error(413, f"request body | {got} bytes | expected at most {self.max_body} bytes")(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        token = (self.token or "").encode()
        headers = dict(scope["headers"])
        given = []
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                given.append(value)
        if scope["path"] == "/":
            from urllib.parse import parse_qs

            given += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return any(hmac.compare_digest(g.encode(), token) for g in given)


def _json_range_errors(scope: Scope, send: Send) -> Send:
    """Starlette's FileResponse answers a malformed Range with a text/plain 400 and an
    unsatisfiable one with an empty 416: give them this API's JSON error instead."""
    replaced = False

    async def wrapped(message: Message) -> None:
        nonlocal replaced
        if (message["type"] == "http.response.start" and message["status"] in (400, 416)
                and not dict(message.get("headers", [])).get(b"content-type", b"").startswith(b"application/json")):
            replaced = True
            headers = dict(scope["headers"])
            asked = headers.get(b"range", b"").decode("latin-1")[:80]
            size = dict(message.get("headers", [])).get(b"content-range", b"").decode("latin-1").rpartition("/")[2]
            within = f" within the file's {size} bytes" if size else ""
            body = JSONResponse({"error": f"range | {asked!r} | expected byte ranges (bytes=START-END){within}"}).body
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": message["status"],
                        "headers": headers + ([(b"content-range", f"bytes */{size}".encode())] if size else [])})
            await send({"type": "http.response.body", "body": body})
            return
        if not replaced:
            await send(message)

    return wrapped
