"""The Muse API over httpx: authentication, error translation, retries, transfers.

Exceptions (all carry a message that is already redacted)::

    MuseError
    ├── MuseTransientError       worth retrying: connect errors, timeouts, 502/503/
    │                            504, 429, HTML pages from a proxy, short downloads
    └── MusePermanentError       the request itself is wrong or cannot succeed
        ├── MuseAuthError        401/403, or no usable JWT
        ├── MuseNotFoundError    404 (unknown key, software or route)
        └── MuseNotReadyError    409 (results asked for before cr == "OK")

Retries are bounded, with exponential back-off, and honour ``Retry-After``. A POST
is retried only when it surely did not reach the service (connection refused,
connect timeout) or the service refused it (503, 429): a POST that may have been
delivered is never sent twice, so there are no silent duplicate submissions.

The JWT is sent as the documented ``jwt`` field of every POST and as an
``Authorization: Bearer`` header on every request; never in a URL. On a 401, with a
username and password, a new JWT is obtained once and the request is retried.
"""

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})
POST_RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER = 60.0
_KEY_IN_MSG = re.compile(r"key value=([A-Za-z0-9_.-]+)")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_JWT_FIELD = re.compile(
    r"""(["']?(?:jwt|password|token)["']?\s*[:=]\s*["']?)[^"'&\s,}]+"""
)
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class MuseError(Exception):
    """A failed Muse request; ``status`` is the HTTP status when there was one."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        error_type: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.retry_after = retry_after


class MuseTransientError(MuseError):
    """Worth retrying later."""


class MusePermanentError(MuseError):
    """Retrying the same request cannot help."""


class MuseAuthError(MusePermanentError):
    """Authentication failed or expired and cannot be renewed."""


class MuseNotFoundError(MusePermanentError):
    """The service does not know this key, software or route."""


class MuseNotReadyError(MusePermanentError):
    """Results asked for before the job ended well."""


class Redactor:
    """Masks secrets (the JWT, the password) as ``***`` in any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def __call__(self, text: Any) -> str:
        result = str(text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            result = result.replace(secret, "***")
        result = _BEARER.sub(r"\1***", result)
        result = _JWT_FIELD.sub(r"\1***", result)
        return _JWT_SHAPE.sub("***", result)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record it sees."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        return True


def quiet_http_loggers() -> None:
    """httpx/httpcore log URLs and headers at INFO/DEBUG: keep them at WARNING."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Submission:
    """What a submission answered: the key and the advertised follow-up URLs."""

    key: str
    software: str
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def can_cancel(self) -> bool:
        return bool(self.urls.get("cancel"))


@dataclass
class RetryPolicy:
    """Bounded exponential back-off."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay)


def key_from_submission(body: Any) -> str:
    """The key: last path segment of ``url``, else ``key value=<k>`` in ``msg``."""
    if isinstance(body, dict):
        url = body.get("url")
        if isinstance(url, str) and url.strip():
            segments = [s for s in httpx.URL(url.strip()).path.split("/") if s]
            if segments and _looks_like_key(segments[-1]):
                return segments[-1]
        match = _KEY_IN_MSG.search(str(body.get("msg", "")))
        if match:
            return match.group(1).rstrip(".")
    raise MusePermanentError(
        "The Muse submission answer holds no job key: expected a 'url' ending in "
        f"the key or 'key value=<key>' in 'msg', got {_shorten(body)}."
    )


def _looks_like_key(segment: str) -> bool:
    try:
        uuid.UUID(segment)
        return True
    except ValueError:
        return bool(re.fullmatch(r"[A-Za-z0-9_-]{8,}", segment)) and segment not in (
            "state",
            "run",
        )


def token_from_obtain(body: Any) -> str:
    """Accept ``{"token"}``, ``{"access"}``, ``{"jwt"}`` or a bare JSON string."""
    if isinstance(body, str) and body.strip():
        return body.strip()
    if isinstance(body, dict):
        for name in ("token", "access", "jwt"):
            value = body.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()
    raise MuseAuthError(
        "jwt/obtain answered without a token: expected a 'token', 'access' or "
        "'jwt' field or a bare string. Check --muse-url."
    )


def _shorten(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


class MuseClient:
    """One configured httpx client for one Muse API root."""

    def __init__(
        self,
        base_url: str,
        *,
        jwt: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
    ) -> None:
        quiet_http_loggers()
        self.base_url = base_url.rstrip("/") + "/"
        self.redact = Redactor()
        for secret in (jwt, password):
            self.redact.add(secret)
        self._jwt = jwt
        self._username = username
        self._password = password
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._logger = logger or logging.getLogger(__name__)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    @property
    def can_renew(self) -> bool:
        return bool(self._username and self._password)

    def url(self, *segments: str) -> str:
        """An API URL with the documented trailing slash."""
        path = "/".join(s.strip("/") for s in segments if s)
        return f"{self.base_url}{path}/"

    # -- authentication -------------------------------------------------------

    def obtain_jwt(self) -> str:
        """POST jwt/obtain/ with the username and password; keeps the token."""
        if not self.can_renew:
            raise MuseAuthError(
                "No Muse credentials to obtain a JWT: set SNAKEMAKE_MUSE_JWT, or "
                "SNAKEMAKE_MUSE_USERNAME and SNAKEMAKE_MUSE_PASSWORD."
            )
        credentials = {"username": self._username, "password": self._password}
        response = self._send(
            "POST",
            self.url("jwt", "obtain"),
            is_post=True,
            auth=False,
            json_body=credentials,
        )
        if response.status_code in (400, 415):
            response = self._send(
                "POST",
                self.url("jwt", "obtain"),
                is_post=True,
                auth=False,
                data=credentials,
            )
        token = token_from_obtain(self._json(self._checked(response)))
        self.redact.add(token)
        self._jwt = token
        return token

    def verify_jwt(self) -> dict[str, Any]:
        """POST jwt/verify/; a 401 becomes MuseAuthError."""
        body = self._request_json("POST", self.url("jwt", "verify"), data={})
        return body if isinstance(body, dict) else {"valid": bool(body)}

    def ensure_jwt(self) -> None:
        """Obtain a JWT when only a username and password are configured."""
        if not self._jwt:
            self.obtain_jwt()

    # -- the documented requests ----------------------------------------------

    def list_software(self) -> list[Any]:
        body = self._request_json("GET", self.url("software", "list"))
        if not isinstance(body, list):
            raise MusePermanentError(
                f"software/list answered {_shorten(body)}; expected a JSON list."
            )
        return body

    def submit(
        self,
        software: str,
        fields: dict[str, str],
        files: Sequence[tuple[str, Path]],
    ) -> Submission:
        """POST software/muse/run/{software}/ as multipart, files streamed."""
        body = self._request_json(
            "POST",
            self.url("software", "muse", "run", software),
            data=fields,
            files=files,
        )
        key = key_from_submission(body)
        urls = body.get("urls") if isinstance(body, dict) else None
        clean = {str(k): str(v) for k, v in (urls or {}).items() if v}
        return Submission(key=key, software=software, urls=clean)

    def state(self, software: str, key: str) -> dict[str, Any]:
        body = self._request_json(
            "GET", self.url("software", "muse", "state", software, key)
        )
        if not isinstance(body, dict):
            raise MuseTransientError(f"state of {key} answered {_shorten(body)}.")
        return body

    def cancel(self, software: str, key: str) -> None:
        """The local service's extension; built from our own base URL, so the
        JWT never goes to a host named only in an answer."""
        self._request_json(
            "POST", self.url("software", "muse", "cancel", software, key), data={}
        )

    def download_result(self, software: str, key: str, destination: Path) -> Path:
        """GET software/muse/run/: a file body, or a download URL to follow."""
        url = self.url("software", "muse", "run", software, key)
        return self._download(url, destination, follow_download=True)

    def download_content(self, software: str, key: str, destination: Path) -> Path:
        url = self.url("software", "muse", "content", software, key)
        return self._download(url, destination, follow_download=False)

    # -- plumbing -------------------------------------------------------------

    def _request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._send_authenticated(method, url, **kwargs)
        return self._json(self._checked(response))

    def _send_authenticated(self, method: str, url: str, **kwargs: Any) -> Any:
        is_post = method == "POST"
        response = self._send(method, url, is_post=is_post, **kwargs)
        if response.status_code == 401 and self.can_renew:
            self._logger.warning("Muse answered 401; obtaining a new JWT once.")
            self.obtain_jwt()
            response = self._send(method, url, is_post=is_post, **kwargs)
        return response

    def _send(
        self, method: str, url: str, *, is_post: bool, auth: bool = True, **kwargs: Any
    ) -> httpx.Response:
        delays = self._retry.delays()
        while True:
            try:
                response = self._send_once(method, url, auth=auth, **kwargs)
            except httpx.TransportError as error:
                failure: MuseError = self._transport_failure(error, method, url)
                retryable = not is_post or _surely_not_sent(error)
            else:
                retry_set = POST_RETRY_STATUSES if is_post else RETRY_STATUSES
                if response.status_code not in retry_set:
                    return response
                failure = self._status_failure(response, method, url)
                retryable = True
            delay = next(delays, None) if retryable else None
            if delay is None:
                raise failure
            wait = max(delay, failure.retry_after or 0.0)
            self._logger.warning(self.redact(f"{failure} Retrying in {wait:.1f} s."))
            self._sleep(wait)

    def _send_once(
        self,
        method: str,
        url: str,
        *,
        auth: bool,
        data: dict[str, str] | None = None,
        files: Sequence[tuple[str, Path]] = (),
        json_body: Any = None,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        fields = dict(data) if data is not None else None
        if auth and self._jwt:
            headers["Authorization"] = f"Bearer {self._jwt}"
            if method == "POST" and fields is not None:
                fields["jwt"] = self._jwt
        with ExitStack() as stack:
            # Files are reopened for every attempt, and httpx streams them.
            upload = [
                ("file", (path.name, stack.enter_context(open(path, "rb"))))
                for _name, path in files
            ]
            return self._http.request(
                method,
                url,
                headers=headers,
                data=fields,
                files=upload or None,
                json=json_body,
            )

    def _transport_failure(
        self, error: httpx.TransportError, method: str, url: str
    ) -> MuseTransientError:
        return MuseTransientError(
            self.redact(
                f"Muse request {method} {url} failed: "
                f"{type(error).__name__}: {error or 'no detail'}."
            )
        )

    def _status_failure(
        self, response: httpx.Response, method: str, url: str
    ) -> MuseError:
        return translate_error(response, f"{method} {url}", self.redact)

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        where = f"{response.request.method} {response.request.url}"
        raise translate_error(response, where, self.redact)

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MuseTransientError(
                self.redact(
                    f"Muse answered {response.request.url} with a body that is not "
                    f"JSON ({_describe_body(response)})."
                )
            ) from None

    def _download(self, url: str, destination: Path, *, follow_download: bool) -> Path:
        for delay in [*self._retry.delays(), None]:
            try:
                return self._download_once(url, destination, follow_download)
            except MuseTransientError as error:
                if delay is None:
                    raise
                self._logger.warning(f"{error} Retrying in {delay:.1f} s.")
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _download_once(
        self, url: str, destination: Path, follow_download: bool
    ) -> Path:
        request = self._http.build_request("GET", url, headers=self._auth_headers())
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as error:
            raise self._transport_failure(error, "GET", url) from None
        try:
            if response.status_code == 401 and self.can_renew:
                response.close()
                self.obtain_jwt()
                return self._download_once(url, destination, follow_download)
            if not response.is_success:
                response.read()
                raise translate_error(response, f"GET {url}", self.redact)
            if "json" in response.headers.get("content-type", ""):
                response.read()
                return self._follow(response, destination, follow_download)
            return _stream_to_file(response, destination, self.redact)
        finally:
            response.close()

    def _follow(
        self, response: httpx.Response, destination: Path, follow_download: bool
    ) -> Path:
        body = self._json(response)
        link = body.get("url") if isinstance(body, dict) else None
        if not follow_download or not isinstance(link, str):
            raise MusePermanentError(
                f"Expected a file from {response.request.url}, got {_shorten(body)}."
            )
        # todownload=yes: keep only the key and ask our own API root for it.
        download_key = httpx.URL(link).params.get("key")
        if not download_key:
            raise MusePermanentError(f"Download link without a key: {_shorten(link)}")
        target = httpx.URL(self.url("download")).copy_with(params={"key": download_key})
        return self._download_once(str(target), destination, False)

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._jwt}"} if self._jwt else {}


def _surely_not_sent(error: httpx.TransportError) -> bool:
    return isinstance(
        error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isdecimal():
        return min(float(value), MAX_RETRY_AFTER)
    return None


def _describe_body(response: httpx.Response) -> str:
    text = response.text
    title = _HTML_TITLE.search(text)
    if title:
        return f"an HTML page titled {title.group(1).strip()!r}"
    if "<html" in text[:500].lower():
        return "an HTML page"
    return repr(_shorten(text.strip(), 200)) if text.strip() else "an empty body"


def translate_error(
    response: httpx.Response, where: str, redact: Callable[[Any], str]
) -> MuseError:
    """The ``{error, more, type}`` shape (or any other body) -> one exception."""
    status = response.status_code
    error_type, detail = "", _describe_body(response)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and "error" in body:
        error_type = str(body.get("type", ""))
        more = body.get("more") or []
        detail = str(body["error"])
        if more:
            detail += " (" + "; ".join(str(m) for m in more) + ")"
    message = redact(f"Muse answered {where} with HTTP {status}: {detail}")
    kind = _error_class(status, body is None)
    return kind(message, status, error_type, _retry_after(response))


def _error_class(status: int, not_json: bool) -> type[MuseError]:
    if status in (401, 403):
        return MuseAuthError
    if status == 404:
        return MuseNotFoundError
    if status == 409:
        return MuseNotReadyError
    if status in RETRY_STATUSES or status >= 500:
        return MuseTransientError
    if not_json and status >= 400 and status not in (400, 413):
        # An HTML page from a proxy in front of the service.
        return MuseTransientError
    return MusePermanentError


def _stream_to_file(
    response: httpx.Response, destination: Path, redact: Callable[[Any], str]
) -> Path:
    """Write the body to ``destination`` and check it against Content-Length."""
    expected = response.headers.get("content-length")
    partial = destination.with_name(destination.name + ".part")
    written = 0
    try:
        with open(partial, "wb") as handle:
            for chunk in response.iter_bytes(1 << 20):
                handle.write(chunk)
                written += len(chunk)
    except httpx.TransportError as error:
        partial.unlink(missing_ok=True)
        raise MuseTransientError(
            redact(f"Download of {response.request.url} broke off: {error}.")
        ) from None
    if expected is not None and expected.isdecimal() and int(expected) != written:
        partial.unlink(missing_ok=True)
        raise MuseTransientError(
            redact(
                f"Download of {response.request.url} is short: {written} of "
                f"{expected} bytes."
            )
        )
    partial.replace(destination)
    return destination
