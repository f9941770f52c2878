"""The Muse client against httpx.MockTransport: requests, errors, retries, secrets."""

import json
import logging
from pathlib import Path

import httpx
import pytest

from snakemake_executor_muse.client import (
    MuseAuthError,
    MuseClient,
    MuseNotFoundError,
    MuseNotReadyError,
    MusePermanentError,
    MuseTransientError,
    RedactingFilter,
    Redactor,
    RetryPolicy,
    key_from_submission,
    token_from_obtain,
)

BASE = "http://127.0.0.1:9/api/"
KEY = "58ae6cea-df31-4059-9466-b817c337985d"
SECRET = "SECRET-TOKEN-123"


def make_client(handler, **kwargs) -> tuple[MuseClient, list[float]]:
    sleeps: list[float] = []
    client = MuseClient(
        BASE,
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        retry=RetryPolicy(attempts=4, first_delay=0.5, max_delay=2.0),
        **kwargs,
    )
    return client, sleeps


def submitted(request: httpx.Request) -> httpx.Response:
    url = f"http://127.0.0.1:8000/api/software/muse/state/bash/{KEY}/"
    return httpx.Response(200, json={"msg": "...", "url": url, "urls": {}})


def test_key_from_url_or_msg():
    assert key_from_submission({"url": f"http://h/api/x/state/sw/{KEY}/"}) == KEY
    assert key_from_submission({"msg": f"and the key value={KEY} in order"}) == KEY
    with pytest.raises(MusePermanentError, match="no job key"):
        key_from_submission({"msg": "nothing"})


@pytest.mark.parametrize(
    "body", [{"token": "t0k"}, {"access": "t0k", "refresh": "r"}, {"jwt": "t0k"}, "t0k"]
)
def test_jwt_obtain_shapes(body):
    assert token_from_obtain(body) == "t0k"


def test_jwt_obtain_without_token_is_auth_error():
    with pytest.raises(MuseAuthError):
        token_from_obtain({"detail": "ok"})


def test_submit_sends_fields_files_jwt_and_trailing_slash(tmp_path: Path):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return submitted(request)

    archive = tmp_path / "inputs.zip"
    archive.write_bytes(b"PK-zip-bytes")
    script = tmp_path / "muse_job.sh"
    script.write_text("echo hi\n")
    client, _ = make_client(handler, jwt=SECRET)
    fields = {"cmd": "bash muse_job.sh", "files_order": '["inputs.zip","muse_job.sh"]'}
    result = client.submit("bash", fields, [("a", archive), ("b", script)])
    assert result.key == KEY and not result.can_cancel
    request = seen[0]
    assert str(request.url) == f"{BASE}software/muse/run/bash/"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    body = request.content
    assert b'name="jwt"' in body and SECRET.encode() in body
    assert b'filename="inputs.zip"' in body and b"PK-zip-bytes" in body
    assert b'name="files_order"' in body
    assert SECRET not in str(request.url)


def test_cancel_advertised():
    def handler(request):
        return httpx.Response(
            200,
            json={"url": f"http://h/api/s/{KEY}/", "urls": {"cancel": "http://h/c"}},
        )

    client, _ = make_client(handler, jwt="abcd1234")
    assert client.submit("bash", {}, []).can_cancel


def test_get_retries_transient_then_succeeds():
    answers = iter(
        [
            httpx.ConnectError("refused"),
            httpx.Response(502, text="<html><title>Bad Gateway</title></html>"),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json={"info": {"report": {"cr": "WAIT"}}}),
        ]
    )

    def handler(request):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client, sleeps = make_client(handler, jwt="abcd1234")
    assert client.state("bash", KEY)["info"]["report"]["cr"] == "WAIT"
    assert sleeps == [0.5, 1.0, 2.0]


def test_get_gives_up_after_bounded_attempts():
    def handler(request):
        return httpx.Response(503, json={"error": "busy", "more": [], "type": "x"})

    client, sleeps = make_client(handler, jwt="abcd1234")
    with pytest.raises(MuseTransientError, match="HTTP 503: busy"):
        client.state("bash", KEY)
    assert len(sleeps) == 3


def test_post_not_retried_when_it_may_have_been_delivered(tmp_path: Path):
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ReadTimeout("no answer")

    client, sleeps = make_client(handler, jwt="abcd1234")
    with pytest.raises(MuseTransientError):
        client.submit("bash", {}, [])
    assert len(calls) == 1 and sleeps == []


def test_post_retried_on_refusal_and_503_and_429_with_retry_after():
    answers = iter(
        [
            httpx.ConnectError("refused"),
            httpx.Response(503, json={"error": "down", "more": [], "type": "t"}),
            httpx.Response(429, headers={"Retry-After": "5"}, text="slow down"),
        ]
    )

    def handler(request):
        answer = next(answers, None)
        if answer is None:
            return submitted(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client, sleeps = make_client(handler, jwt="abcd1234")
    assert client.submit("bash", {}, []).key == KEY
    assert sleeps == [0.5, 1.0, 5.0]


def test_post_500_is_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(500, json={"error": "boom", "more": ["x"], "type": "i"})

    client, _ = make_client(handler, jwt="abcd1234")
    with pytest.raises(MuseTransientError, match=r"HTTP 500: boom \(x\)"):
        client.submit("bash", {}, [])
    assert calls == [1]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, MusePermanentError),
        (401, MuseAuthError),
        (403, MuseAuthError),
        (404, MuseNotFoundError),
        (409, MuseNotReadyError),
        (413, MusePermanentError),
    ],
)
def test_error_shape_translation(status, kind):
    def handler(request):
        return httpx.Response(
            status, json={"error": f"e{status}", "more": ["m"], "type": "t"}
        )

    client, _ = make_client(handler, jwt="abcd1234")
    with pytest.raises(kind, match=f"HTTP {status}: e{status} \\(m\\)") as info:
        client.state("bash", KEY)
    assert info.value.status == status and info.value.error_type == "t"


def test_non_json_success_is_transient():
    def handler(request):
        return httpx.Response(200, text="<html><title>Proxy</title></html>")

    client, _ = make_client(handler, jwt="abcd1234")
    with pytest.raises(MuseTransientError, match="HTML page titled 'Proxy'"):
        client.list_software()


def test_401_renews_jwt_once_with_credentials():
    tokens = []

    def handler(request):
        if request.url.path.endswith("/jwt/obtain/"):
            body = json.loads(request.content)
            assert body == {"username": "u", "password": "pw-very-secret"}
            return httpx.Response(200, json={"token": f"new-token-{len(tokens)}"})
        tokens.append(request.headers.get("authorization"))
        if request.headers.get("authorization") == "Bearer old-token":
            return httpx.Response(
                401, json={"error": "expired", "more": [], "type": "a"}
            )
        return httpx.Response(200, json={"info": {"report": {"cr": "OK"}}})

    client, _ = make_client(
        handler, jwt="old-token", username="u", password="pw-very-secret"
    )
    assert client.state("bash", KEY)["info"]["report"]["cr"] == "OK"
    assert tokens == ["Bearer old-token", "Bearer new-token-1"]


def test_401_without_credentials_is_auth_error():
    def handler(request):
        return httpx.Response(401, json={"error": "expired", "more": [], "type": "a"})

    client, _ = make_client(handler, jwt="old-token")
    with pytest.raises(MuseAuthError):
        client.state("bash", KEY)


def test_redaction_of_echoed_secrets_k7(caplog):
    def handler(request):
        echoed = f"headers: Authorization: {request.headers['authorization']} url"
        return httpx.Response(500, text=f"{echoed} jwt={SECRET}")

    logger = logging.getLogger("muse-test")
    client, _ = make_client(handler, jwt=SECRET, logger=logger)
    with caplog.at_level(logging.DEBUG), pytest.raises(MuseTransientError) as info:
        client.state("bash", KEY)
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)
    assert SECRET not in caplog.text
    assert logging.getLogger("httpx").level == logging.WARNING


def test_redactor_and_filter():
    redact = Redactor()
    redact.add("hunter2-password")
    text = "user pw hunter2-password Bearer eyJa.eyJb.sig {'jwt': 'abc'}"
    cleaned = redact(text)
    assert "hunter2" not in cleaned and "eyJa" not in cleaned and "abc" not in cleaned
    record = logging.LogRecord(
        "x", logging.INFO, "f", 1, "%s", ("hunter2-password",), None
    )
    RedactingFilter(redact).filter(record)
    assert record.getMessage() == "***"


def zip_response(body: bytes, length: int | None = None) -> httpx.Response:
    headers = {"content-type": "application/zip"}
    if length is not None:
        headers["content-length"] = str(length)
    return httpx.Response(200, headers=headers, content=body)


def test_download_streams_and_checks_length(tmp_path: Path):
    def handler(request):
        return zip_response(b"0123456789", 10)

    client, _ = make_client(handler, jwt="abcd1234")
    target = client.download_result("bash", KEY, tmp_path / "run.zip")
    assert target.read_bytes() == b"0123456789"


def test_short_download_is_retried_then_fails(tmp_path: Path):
    class Short(httpx.SyncByteStream):
        def __iter__(self):
            yield b"0123"

    def handler(request):
        return httpx.Response(
            200,
            headers={"content-type": "application/zip", "content-length": "10"},
            stream=Short(),
        )

    client, sleeps = make_client(handler, jwt="abcd1234")
    with pytest.raises(MuseTransientError, match="short: 4 of 10 bytes"):
        client.download_result("bash", KEY, tmp_path / "run.zip")
    assert not (tmp_path / "run.zip").exists()
    assert not (tmp_path / "run.zip.part").exists()
    assert len(sleeps) == 3


def test_todownload_yes_is_followed_on_our_own_api_root(tmp_path: Path):
    seen = []

    def handler(request):
        seen.append(str(request.url))
        if "/software/muse/run/" in request.url.path:
            link = "http://elsewhere:8000/api/download/?key=20200806_163349_abc"
            return httpx.Response(200, json={"msg": "download", "url": link})
        return zip_response(b"zipdata", 7)

    client, _ = make_client(handler, jwt="abcd1234")
    client.download_result("bash", KEY, tmp_path / "run.zip")
    assert seen[1] == f"{BASE}download/?key=20200806_163349_abc"
    assert (tmp_path / "run.zip").read_bytes() == b"zipdata"


def test_obtain_jwt_with_form_fallback():
    def handler(request):
        if request.headers["content-type"].startswith("application/json"):
            return httpx.Response(
                415, json={"error": "no json", "more": [], "type": "b"}
            )
        return httpx.Response(200, json="bare-token-value")

    client, _ = make_client(handler, username="u", password="p-secret")
    assert client.obtain_jwt() == "bare-token-value"
