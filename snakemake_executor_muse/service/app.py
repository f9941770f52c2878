"""The HTTP face of the service: routes, request decoding, the documented shapes.

Every path is under ``/api/`` and answers with and without its trailing slash (no
redirect, so a POST keeps its body). POST bodies may be JSON, form-urlencoded or
multipart (the only one that carries files). Every error, whatever raised it, goes
through one mapping to ``{"error": ..., "more": [...], "type": ...}`` with the status
of ``ERROR_MAPPING``. ``create_app(config)`` builds everything from a
``ServiceConfig``; the job manager's poll thread runs during the app's lifespan.
"""

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import runner
from .auth import (
    AccessDenied,
    AuthenticationFailed,
    TokenIssuer,
    User,
    UserDirectory,
    load_or_create_secret,
)
from .backends import make_backend, resolve_backend_name
from .backends.base import BackendRejected
from .catalog import Catalog, Software, UnknownSoftware
from .jobs import (
    RETURNED_TYPES,
    BadRequest,
    JobManager,
    JobNotFound,
    NotReady,
    Result,
    RunRequest,
    TooLarge,
    Upload,
    safe_upload_name,
)
from .sbatch import SbatchOptionError
from .store import JobRecord, Store

logger = logging.getLogger(__name__)

#: exception class -> (HTTP status, error type); the first match wins
ERROR_MAPPING: list[tuple[type[Exception], int, str]] = [
    (SbatchOptionError, 400, "bad_request"),
    (BackendRejected, 400, "bad_request"),
    (BadRequest, 400, "bad_request"),
    (AuthenticationFailed, 401, "authentication"),
    (AccessDenied, 403, "forbidden"),
    (UnknownSoftware, 404, "not_found"),
    (JobNotFound, 404, "not_found"),
    (NotReady, 409, "not_ready"),
    (TooLarge, 413, "too_large"),
]
STATUS_TYPES = {400: "bad_request", 401: "authentication", 403: "forbidden",
                404: "not_found", 405: "bad_request", 409: "not_ready",
                413: "too_large"}  # fmt: skip
FORMATS = ("json", "api")


@dataclass
class ServiceConfig:
    """Everything ``create_app`` needs; the CLI flags of ``muse serve`` map 1:1."""

    state_dir: Path
    users_file: Path | None = None
    #: None: the packaged default catalog
    catalog_file: Path | None = None
    #: run names missing from the catalog on the host (one warning per name)
    any_software: bool = False
    #: local, slurm or auto
    backend: str = "local"
    #: local backend CPU budget; None: os.cpu_count()
    cpus: int | None = None
    token_lifetime: int = 3600
    max_upload_mb: int = 10240
    #: base of the URLs in replies, e.g. http://host:8000; None: from the request
    public_url: str | None = None
    #: seconds between two polls of the backend; None: 0.25 local, 1.0 slurm
    poll_interval: float | None = None
    #: longest synchronous POST software/run, in seconds
    sync_timeout: float = 3600.0
    #: ``rsrc.identity`` in reports
    identity: str = "muse"
    #: extra keyword options for the backend's constructor
    backend_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Service:
    """The parts behind the routes."""

    config: ServiceConfig
    store: Store
    catalog: Catalog
    users: UserDirectory
    tokens: TokenIssuer
    jobs: JobManager


def build_service(config: ServiceConfig) -> Service:
    """Open the store, read the catalog and users, build the backend."""
    state_dir = config.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.load(config.catalog_file, config.any_software)
    users = UserDirectory(config.users_file)
    tokens = TokenIssuer(load_or_create_secret(state_dir), config.token_lifetime)
    backend_name = resolve_backend_name(config.backend)
    backend = make_backend(
        backend_name,
        runs_dir=state_dir / "runs",
        state_dir=state_dir,
        cpus=config.cpus,
        **config.backend_options,
    )
    interval = config.poll_interval
    if interval is None:
        interval = 0.25 if backend_name == "local" else 1.0
    store = Store(state_dir / "muse.sqlite3")
    jobs = JobManager(store, backend, state_dir, interval, config.sync_timeout)
    return Service(config, store, catalog, users, tokens, jobs)


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application of the local Muse-compatible service."""
    service = build_service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.jobs.start()
        logger.info("service ready, state in %s", config.state_dir)
        yield
        service.jobs.stop()
        service.store.close()

    app = FastAPI(
        title="muse serve",
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, limit=config.max_upload_mb * 1024 * 1024)
    _install_error_mapping(app)
    _install_routes(app, service)
    return app


# ---------------------------------------------------------------- errors


def error_body(message: str, more: list[str], kind: str) -> dict[str, Any]:
    return {"error": message, "more": [str(item) for item in more], "type": kind}


def _install_error_mapping(app: FastAPI) -> None:
    async def mapped(request: Request, exc: Exception) -> Response:
        for cls, status, kind in ERROR_MAPPING:
            if isinstance(exc, cls):
                more = list(getattr(exc, "more", []))
                return JSONResponse(error_body(str(exc), more, kind), status)
        return await internal(request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = STATUS_TYPES.get(exc.status_code, "internal")
        more = [f"{request.method} {request.url.path}"]
        return JSONResponse(error_body(str(exc.detail), more, kind), exc.status_code)

    async def invalid(request: Request, exc: Exception) -> Response:
        return JSONResponse(error_body(str(exc), [], "bad_request"), 400)

    async def internal(request: Request, exc: Exception) -> Response:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        message = f"internal error: {type(exc).__name__}: {exc}"
        more = ["the service's log has the details"]
        return JSONResponse(error_body(message, more, "internal"), 500)

    for cls, _, _ in ERROR_MAPPING:
        app.add_exception_handler(cls, mapped)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(runner.CommandFailedToStart, internal)
    app.add_exception_handler(Exception, internal)


class BodyLimit:
    """Refuses request bodies over the limit (413), declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self, size: int) -> TooLarge:
        return TooLarge(
            f"request body of {size} bytes is over this service's limit of "
            f"{self.limit} bytes",
            ["send smaller files, or start muse serve with a larger --max-upload-mb"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            exc = self._too_large(int(declared))
            response = JSONResponse(error_body(str(exc), exc.more, "too_large"), 413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise self._too_large(received)
            return message

        await self.app(scope, counted, send)


# ---------------------------------------------------------------- request decoding


@dataclass
class Fields:
    """The parameters of a request, whatever its encoding."""

    values: dict[str, list[Any]]
    files: list[UploadFile]
    from_json: bool = False

    def first(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        if not found or found[0] is None:
            return default
        return str(found[0])

    def has(self, name: str) -> bool:
        return name in self.values


async def read_fields(request: Request) -> Fields:
    """Decode a JSON, form-urlencoded or multipart body into Fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type == "application/json":
        try:
            data = await request.json()
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BadRequest("the JSON body must be an object of parameters")
        return Fields({key: [value] for key, value in data.items()}, [], True)
    if content_type in {"multipart/form-data", "application/x-www-form-urlencoded"}:
        form = await request.form(max_files=10000, max_fields=10000)
        values: dict[str, list[Any]] = {}
        files: list[UploadFile] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile) and key == "file":
                files.append(value)
            elif isinstance(value, UploadFile):
                raise BadRequest(f"field {key!r} carries a file; only 'file' may")
            elif key == "file":
                raise BadRequest(
                    f"field 'file' holds the text {value[:40]!r}, not a file",
                    ["send files as multipart parts, e.g. curl -F 'file=@input.zip'"],
                )
            else:
                values.setdefault(key, []).append(value)
        return Fields(values, files)
    if content_type and await request.body():
        raise BadRequest(
            f"unsupported content type {content_type!r}",
            ["send application/json, application/x-www-form-urlencoded or "
             "multipart/form-data (the only one that carries files)"],
        )  # fmt: skip
    return Fields({}, [])


def list_field(fields: Fields, name: str) -> list[str] | None:
    """A list parameter: a JSON list, a JSON-encoded string, or repeated fields."""
    if not fields.has(name):
        return None
    raw = fields.values[name]
    if len(raw) == 1 and isinstance(raw[0], list):
        return [str(item) for item in raw[0]]
    if len(raw) == 1 and isinstance(raw[0], str):
        text = raw[0].strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                decoded = json.loads(text)
            except ValueError as exc:
                raise BadRequest(
                    f"{name} is not a JSON list: {text!r}",
                    [f'send {name} as a JSON list of strings, e.g. ["a", "b"]'],
                ) from exc
            if isinstance(decoded, list):
                return [str(item) for item in decoded]
        return [text]
    return [str(item) for item in raw]


def yes_no(fields: Fields, name: str) -> bool:
    value = fields.values.get(name, ["no"])[0]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"yes", "true", "1"}:
        return True
    if text in {"no", "false", "0", ""}:
        return False
    raise BadRequest(f"{name} must be 'yes' or 'no', got {value!r}")


def run_request(fields: Fields) -> RunRequest:
    """Check the parameters of a run POST."""
    returned_type = fields.first("returned_type", "stdout") or "stdout"
    if returned_type not in RETURNED_TYPES:
        raise BadRequest(
            f"returned_type {returned_type!r} is not one of {', '.join(RETURNED_TYPES)}"
        )
    if fields.from_json and fields.has("file"):
        raise BadRequest("files can only be sent as multipart/form-data 'file' fields")
    return RunRequest(
        cmd=fields.first("cmd"),
        cmd_option=fields.first("cmd_option"),
        files_order=list_field(fields, "files_order"),
        returned_type=returned_type,
        todownload=yes_no(fields, "todownload"),
        sbatch_list=list_field(fields, "sbatch_list") or [],
        module_list=list_field(fields, "module_list") or [],
    )


def check_format(request: Request, fields: Fields | None = None) -> None:
    """``format=json`` or ``api`` (answered as JSON); anything else is refused."""
    value = request.query_params.get("format") or (
        fields.first("format") if fields else ""
    )
    if value and value not in FORMATS:
        raise BadRequest(
            f"format {value!r} is not supported by this service",
            ["use format=json (format=api is answered as JSON too)"],
        )


def uploads_of(fields: Fields) -> list[Upload]:
    return [Upload(safe_upload_name(item.filename), item.file) for item in fields.files]


def bearer_or_field(request: Request, fields: Fields) -> str:
    token = fields.first("jwt")
    if token:
        return token
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return ""


# ---------------------------------------------------------------- reply shapes


class Urls:
    """The URLs the replies point to."""

    def __init__(self, config: ServiceConfig, request: Request) -> None:
        base = config.public_url or str(request.base_url)
        base = base.rstrip("/")
        if base.endswith("/api"):
            base = base[: -len("/api")]
        self.api = f"{base}/api/"

    def muse(self, action: str, name: str, key: str) -> str:
        return f"{self.api}software/muse/{action}/{name}/{key}/"

    def all(self, name: str, key: str) -> dict[str, str]:
        actions = ("state", "run", "content", "cancel")
        return {action: self.muse(action, name, key) for action in actions}

    def download(self, key: str) -> str:
        return f"{self.api}download/?key={key}"


def verdict(record: JobRecord) -> tuple[str, str]:
    """(cr, latest_cr) of a job."""
    if not record.terminal:
        return "WAIT", "IN_PROGRESS"
    if record.succeeded:
        return "OK", "ENDED_OK"
    return "NOK", "ENDED_NOK"


def report(record: JobRecord, identity: str) -> dict[str, Any]:
    """The documented ``info.report`` of a job."""
    cr, latest_cr = verdict(record)
    job_id = int(record.backend_id) if record.backend_id.isdigit() else record.seq
    process = {
        "jobname": record.job_name,
        "job_id": job_id,
        "latest_cr": latest_cr,
        "latest_state": record.state,
        "exit_code": record.exit_code,
        "reason": record.reason,
    }
    return {
        "request": record.request,
        "rsrc": {"identity": identity},
        "process": process,
        "name": record.name,
        "cr": cr,
    }


def state_message(record: JobRecord, urls: Urls) -> tuple[str, str]:
    """(msg, url) of a state reply: what to do next."""
    state_url = urls.muse("state", record.name, record.key)
    run_url = urls.muse("run", record.name, record.key)
    content_url = urls.muse("content", record.name, record.key)
    cr, _ = verdict(record)
    if cr == "OK":
        return (
            f"End of job. You can now get results by GET {run_url} request or ask "
            f"for content (to investigate) by GET {content_url} request.",
            run_url,
        )
    if cr == "NOK":
        code = "" if record.exit_code is None else f", exit code {record.exit_code}"
        return (
            f"Job {record.job_name} ended {record.state}{code}: there are no results. "
            f"GET {content_url} gives the run folder with __WS__stdout.txt and "
            f"__WS__stderr.txt to investigate.",
            content_url,
        )
    return (
        f"Job {record.job_name} is {record.state}. GET {state_url} again to follow "
        f"it; GET {run_url} gives the results once cr is OK; GET {content_url} "
        "shows the run folder as it stands.",
        state_url,
    )


def submitted_message(record: JobRecord, urls: Urls) -> dict[str, Any]:
    state_url = urls.muse("state", record.name, record.key)
    run_url = urls.muse("run", record.name, record.key)
    msg = (
        f"GET {state_url} request to get cluster job state, while waiting for "
        f"results (the GET {run_url} request to get results will be possible once "
        f"job finished). Keep the software name value={record.name} and the key "
        f"value={record.key} in order to be able to follow your POST request. "
        "Notifications will be sent during process running if mail-user given "
        "into sbatch_list option. POST the cancel url with your JWT to stop the job."
    )
    return {"msg": msg, "url": state_url, "urls": urls.all(record.name, record.key)}


def result_response(result: Result, urls: Urls, info: dict[str, Any]) -> Response:
    """A result as the documented reply: JSON stdout, a file body, or a download."""
    if result.kind == "stdout":
        return JSONResponse({"info": {"stdout": result.stdout, **info}})
    if result.kind == "download":
        url = urls.download(result.download_key)
        msg = (
            f"The response content can be downloaded at : {url} *** The resource to "
            "download it is 'GET download' with 'key' option. Keep this key value "
            f"({result.download_key}) to be able to download it."
        )
        return JSONResponse({"msg": msg, "url": url})
    assert result.path is not None
    headers = {"X-Muse-Cr": info["report"]["cr"]}
    return FileResponse(
        result.path, media_type=result.media_type, filename=result.filename,
        headers=headers,
    )  # fmt: skip


# ---------------------------------------------------------------- routes

Handler = Callable[..., Awaitable[Any]]


def _install_routes(app: FastAPI, service: Service) -> None:
    def route(path: str, method: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            full = f"/api/{path}"
            for variant in (full, f"{full}/"):
                app.add_api_route(variant, handler, methods=[method])
            return handler

        return register

    _auth_routes(route, service)
    _software_routes(route, service)
    _muse_routes(route, service)


def _auth_routes(route: Callable[[str, str], Callable[[Handler], Handler]],
                 service: Service) -> None:  # fmt: skip
    @route("jwt/obtain", "POST")
    async def jwt_obtain(request: Request) -> dict[str, Any]:
        fields = await read_fields(request)
        username, password = fields.first("username"), fields.first("password")
        if not username or not password:
            raise BadRequest(
                "jwt/obtain needs both 'username' and 'password'",
                ["send them as JSON or form fields"],
            )
        user = await run_in_threadpool(service.users.authenticate, username, password)
        logger.info("token issued to %s", user.name)
        return {"token": service.tokens.issue(user.name)}

    @route("jwt/verify", "POST")
    async def jwt_verify(request: Request) -> dict[str, Any]:
        fields = await read_fields(request)
        token = fields.first("jwt") or fields.first("token")
        info = service.tokens.verify(token or bearer_or_field(request, fields))
        return {"valid": True, "username": info.username, "expires": info.expires}


async def authorised(
    service: Service, request: Request, fields: Fields, name: str
) -> tuple[User, Software]:
    """The software, once the JWT's user is known and may run it."""
    info = service.tokens.verify(bearer_or_field(request, fields))
    user = service.users.get(info.username)
    if user is None:
        raise AuthenticationFailed(
            f"the JWT's user {info.username!r} is not in this service's users file",
            ["obtain a token for an existing user with POST /api/jwt/obtain/"],
        )
    software = service.catalog.get(name)
    if not user.may_run(name):
        raise AccessDenied(
            f"user {user.name!r} has no access to software {name!r}",
            ["ask the service's administrator for access (users file 'softwares')"],
        )
    return user, software


def _software_routes(route: Callable[[str, str], Callable[[Handler], Handler]],
                     service: Service) -> None:  # fmt: skip
    @route("software/list", "GET")
    async def software_list(request: Request) -> Any:
        check_format(request)
        return service.catalog.listing()

    @route("software/run/{name}", "POST")
    async def software_run(name: str, request: Request) -> Response:
        fields = await read_fields(request)
        check_format(request, fields)
        _, software = await authorised(service, request, fields, name)
        run = run_request(fields)
        outcome = await run_in_threadpool(
            service.jobs.run_sync, software, run, uploads_of(fields)
        )
        result = await run_in_threadpool(service.jobs.sync_result, outcome)
        cr = "OK" if outcome.ok else "NOK"
        info = {"report": {"name": name, "request": outcome.request_echo, "cr": cr}}
        return result_response(result, Urls(service.config, request), info)

    @route("download", "GET")
    async def download(request: Request) -> Response:
        check_format(request)
        key = request.query_params.get("key", "")
        if not key:
            raise BadRequest("GET download needs the 'key' parameter: download/?key=K")
        found = service.jobs.download(key)
        return FileResponse(found.path, media_type=found.media_type,
                            filename=found.filename)  # fmt: skip


def _muse_routes(route: Callable[[str, str], Callable[[Handler], Handler]],
                 service: Service) -> None:  # fmt: skip
    identity = service.config.identity

    @route("software/muse/run/{name}", "POST")
    async def muse_submit(name: str, request: Request) -> dict[str, Any]:
        fields = await read_fields(request)
        check_format(request, fields)
        user, software = await authorised(service, request, fields, name)
        run = run_request(fields)
        record = await run_in_threadpool(
            service.jobs.submit, software, user.name, run, uploads_of(fields)
        )
        return submitted_message(record, Urls(service.config, request))

    @route("software/muse/state/{name}/{key}", "GET")
    async def muse_state(name: str, key: str, request: Request) -> dict[str, Any]:
        check_format(request)
        record = service.jobs.job(name, key)
        msg, url = state_message(record, Urls(service.config, request))
        return {"info": {"report": report(record, identity)}, "msg": msg, "url": url}

    @route("software/muse/run/{name}/{key}", "GET")
    async def muse_result(name: str, key: str, request: Request) -> Response:
        check_format(request)
        record = service.jobs.job(name, key)
        result = await run_in_threadpool(service.jobs.job_result, record)
        info = {"report": report(record, identity)}
        return result_response(result, Urls(service.config, request), info)

    @route("software/muse/content/{name}/{key}", "GET")
    async def muse_content(name: str, key: str, request: Request) -> Response:
        check_format(request)
        record = service.jobs.job(name, key)
        path = await run_in_threadpool(service.jobs.content_zip, record)
        return FileResponse(
            path, media_type="application/zip", filename=f"content_{key}.zip",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )  # fmt: skip

    @route("software/muse/cancel/{name}/{key}", "POST")
    async def muse_cancel(name: str, key: str, request: Request) -> dict[str, Any]:
        fields = await read_fields(request)
        info = service.tokens.verify(bearer_or_field(request, fields))
        record = service.jobs.job(name, key)
        record = await run_in_threadpool(service.jobs.cancel, record, info.username)
        urls = Urls(service.config, request)
        msg = (
            f"Cancel of job {record.job_name} asked; it is {record.state}. GET "
            f"{urls.muse('state', name, key)} until cr is NOK (state CANCELLED)."
        )
        state_url = urls.muse("state", name, key)
        return {
            "msg": msg,
            "url": state_url,
            "info": {"report": report(record, identity)},
        }
