"""The executor's polling and result handling, with the client on MockTransport.

The executor is built without RemoteExecutor.__init__ (no polling thread, no
Snakemake scheduler): only the attributes check_active_jobs uses are set, and the
report_* calls are recorded.
"""

import asyncio
import io
import logging
import stat
import types
import zipfile
from pathlib import Path

import httpx
import pytest

from snakemake_executor_muse.client import MuseClient, Redactor, RetryPolicy
from snakemake_executor_muse.executor import Executor, Tracked
from snakemake_executor_muse.settings import ExecutorSettings

KEY = "0591aaf8-8a12-4967-848a-1268784ffd91"


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def state(cr, latest_cr, latest_state):
    report = {
        "cr": cr,
        "process": {"latest_cr": latest_cr, "latest_state": latest_state},
    }
    return {"info": {"report": report}}


class FakeService:
    """Plays back answers per route and counts requests."""

    def __init__(self, states, run=b"", content=b""):
        self.states = list(states)
        self.run = run
        self.content = content

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/state/" in path:
            answer = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            if isinstance(answer, Exception):
                raise answer
            return httpx.Response(200, json=answer)
        body = self.run if "/muse/run/" in path else self.content
        return httpx.Response(
            200, headers={"content-type": "application/zip"}, content=body
        )


class Recorder:
    def __init__(self):
        self.success = []
        self.errors = []


def make_executor(service, **settings) -> tuple[Executor, Recorder]:
    executor = object.__new__(Executor)
    recorder = Recorder()
    executor.logger = logging.getLogger("muse-executor-test")
    executor.redact = Redactor()
    executor.workflow = types.SimpleNamespace(
        executor_settings=ExecutorSettings(**settings),
        remote_execution_settings=types.SimpleNamespace(
            seconds_between_status_checks=10
        ),
    )
    executor.client = MuseClient(
        "http://127.0.0.1:9/api/",
        jwt="jwt-for-tests",
        transport=httpx.MockTransport(service),
        sleep=lambda _s: None,
        retry=RetryPolicy(attempts=1),
    )

    class Limiter:
        async def __aenter__(self):
            return None

        async def __aexit__(self, *args):
            return None

    executor.status_rate_limiter = Limiter()
    executor._ready = True
    executor._next_seconds_between_status_checks = None
    executor.report_job_success = recorder.success.append
    executor.report_job_error = lambda info, msg=None, aux_logs=(): (
        recorder.errors.append((info, msg, list(aux_logs)))
    )
    return executor, recorder


def job_info(outputs, logs=(), benchmark=None):
    tracked = Tracked(
        "bash",
        KEY,
        "boom",
        Path(".snakemake/muse/logs/boom/no_wildcards") / KEY,
        list(outputs),
        list(logs),
        benchmark,
        False,
    )
    return types.SimpleNamespace(job=None, external_jobid=KEY, aux={"muse": tracked})


def poll(executor, infos):
    async def collect():
        return [i async for i in executor.check_active_jobs(infos)]

    return asyncio.run(collect())


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_half_initialised_executor_yields_everything():
    executor = object.__new__(Executor)
    infos = [job_info(["a"]), job_info(["b"])]
    assert poll(executor, infos) == infos
    assert poll(executor, []) == []


def test_success_extracts_outputs_and_verifies(tmp_path: Path):
    run = zip_bytes(
        {
            "out/a.txt": b"A",
            "in/input.txt": b"not mine",
            ".muse/exit_code": b"0\n",
            "logs/a.log": b"log",
            "bench/a.tsv": b"s\n1\n",
        }
    )
    executor, recorder = make_executor(
        FakeService([state("OK", "ENDED_OK", "COMPLETED")], run)
    )
    info = job_info(["out/a.txt"], ["logs/a.log"], "bench/a.tsv")
    assert poll(executor, [info]) == []
    assert recorder.success == [info] and recorder.errors == []
    assert (tmp_path / "out/a.txt").read_text() == "A"
    assert (tmp_path / "bench/a.tsv").exists()
    assert not (tmp_path / "in").exists()


def test_missing_output_fails_with_name_and_key_k8(tmp_path: Path):
    run = zip_bytes({".muse/exit_code": b"0\n", "__WS__stderr.txt": b"oops\n"})
    executor, recorder = make_executor(
        FakeService([state("OK", "ENDED_OK", "COMPLETED")], run)
    )
    poll(executor, [job_info(["out/a.txt"])])
    (_, message, _) = recorder.errors[0]
    assert "out/a.txt" in message and KEY in message and "oops" in message


def test_failure_brings_back_logs_not_outputs_k11_k12(tmp_path: Path):
    content = zip_bytes(
        {
            "logs/boom.out": b"step1\n",
            "logs/boom.err": b"bad input\n",
            "b/out.txt": b"partial",
            ".muse/exit_code": b"1\n",
            "__WS__stderr.txt": b"line\n" * 30 + b"bad input\n",
            "__WS__stdout.txt": b"step1\n",
        }
    )
    service = FakeService([state("NOK", "ENDED_NOK", "FAILED")], content=content)
    executor, recorder = make_executor(service)
    poll(executor, [job_info(["b/out.txt"], ["logs/boom.out", "logs/boom.err"])])
    (_, message, aux_logs) = recorder.errors[0]
    assert (tmp_path / "logs/boom.out").read_text() == "step1\n"
    assert (tmp_path / "logs/boom.err").read_text() == "bad input\n"
    assert not (tmp_path / "b/out.txt").exists()
    assert KEY in message and "FAILED" in message and "exit code 1" in message
    assert "bad input" in message and message.count("line") <= 20
    assert any(p.endswith("__WS__stderr.txt") for p in aux_logs)


def test_timeout_reason_names_runtime(tmp_path: Path):
    service = FakeService([state("NOK", "ENDED_NOK", "TIMEOUT")], content=zip_bytes({}))
    executor, recorder = make_executor(service)
    poll(executor, [job_info(["x"])])
    assert "runtime" in recorder.errors[0][1]


def test_transient_errors_keep_the_job_then_it_completes_k6(tmp_path: Path):
    run = zip_bytes({".muse/exit_code": b"0\n", "r/a.txt": b"a"})
    answers = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        state("WAIT", "IN_PROGRESS", "RUNNING"),
        state("OK", "ENDED_OK", "COMPLETED"),
    ]
    executor, recorder = make_executor(FakeService(answers, run))
    info = job_info(["r/a.txt"])
    for _ in range(3):
        assert poll(executor, [info]) == [info]
    assert poll(executor, [info]) == [] and recorder.success == [info]
    assert executor.next_seconds_between_status_checks == 0.5


def test_transient_errors_past_grace_fail_with_key(tmp_path: Path):
    executor, recorder = make_executor(
        FakeService([httpx.ConnectError("refused")]), status_error_grace=0
    )
    info = job_info(["r/a.txt"])
    info.aux["muse"].error_since = 0.0
    assert poll(executor, [info]) == []
    assert KEY in recorder.errors[0][1] and "refused" in recorder.errors[0][1]


def test_unknown_state_watched_then_failed(tmp_path: Path):
    executor, recorder = make_executor(
        FakeService([state("WAIT", "IN_PROGRESS", "ODD")])
    )
    info = job_info(["r/a.txt"])
    assert poll(executor, [info]) == [info]
    executor.workflow.executor_settings.unknown_state_grace = 0
    info.aux["muse"].unknown_since = 0.0
    assert poll(executor, [info]) == []
    assert "latest_state=ODD" in recorder.errors[0][1]


def test_cancel_without_extension_lists_keys(caplog):
    executor, _ = make_executor(FakeService([state("WAIT", None, None)]))
    with caplog.at_level(logging.WARNING, logger="muse-executor-test"):
        executor.cancel_jobs([job_info(["x"])])
    assert KEY in caplog.text and "keep running" in caplog.text
