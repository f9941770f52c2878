"""`muse serve` as a real process: port file, restart on the same state folder,
--parent-pid; and `muse hash-password`."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from muse_service_helpers import PASSWORDS, write_service_files

from snakemake_executor_muse.service.auth import check_password

MODULE = [sys.executable, "-m", "snakemake_executor_muse.service"]


class Served:
    """One `muse serve` process and a client on its port."""

    def __init__(self, state: Path, conf: dict[str, Path], *extra: str) -> None:
        self.port_file = state.parent / f"port-{time.monotonic_ns()}"
        argv = [
            *MODULE, "serve", "--port", "0", "--port-file", str(self.port_file),
            "--state-dir", str(state), "--users", str(conf["users"]),
            "--catalog", str(conf["catalog"]), "--cpus", "2", *extra,
        ]  # fmt: skip
        self.log = open(state.parent / "serve.log", "ab")  # noqa: SIM115 (lives as long as the process)
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while not self.port_file.exists():
            assert self.process.poll() is None, "muse serve exited at start"
            assert time.monotonic() < deadline, "no port file within 20 s"
            time.sleep(0.05)
        port = int(self.port_file.read_text())
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/", timeout=10)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.http.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(timeout=15)
        self.log.close()

    def state(self, key: str) -> dict:
        reply = self.http.get(f"software/muse/state/bash/{key}/")
        assert reply.status_code == 200, reply.text
        return reply.json()["info"]["report"]

    def wait(self, key: str, done, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while not done(report := self.state(key)):
            assert time.monotonic() < deadline, report
            time.sleep(0.05)
        return report

    def submit(self, token: str, **fields: str) -> str:
        reply = self.http.post("software/muse/run/bash/", json={"jwt": token, **fields})
        assert reply.status_code == 200, reply.text
        return reply.json()["url"].rstrip("/").rsplit("/", 1)[1]


@pytest.fixture
def served(tmp_path):
    conf = write_service_files(tmp_path / "conf")
    started: list[Served] = []

    def start(*extra: str) -> Served:
        server = Served(tmp_path / "state", conf, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def ended(report):
    return report["cr"] != "WAIT"


def test_restart_keeps_jobs_keys_downloads_and_finishes_running_jobs(served):
    first = served()
    login = {"username": "alice", "password": PASSWORDS["alice"]}
    token = first.http.post("jwt/obtain/", json=login).json()["token"]
    done_key = first.submit(
        token, cmd="echo first", returned_type="run.zip", todownload="yes"
    )
    first.wait(done_key, ended)
    download_url = first.http.get(f"software/muse/run/bash/{done_key}/").json()["url"]
    download_key = download_url.split("key=")[1]
    running_key = first.submit(token, cmd="sleep 2; echo second > b.txt")
    first.wait(running_key, lambda r: r["process"]["latest_state"] == "RUNNING")
    first.stop(signal.SIGKILL)

    second = served()
    assert second.http.post("jwt/verify/", json={"jwt": token}).status_code == 200
    assert second.state(done_key)["cr"] == "OK"
    download = second.http.get("download/", params={"key": download_key})
    assert download.status_code == 200 and download.content[:2] == b"PK"
    report = second.wait(running_key, ended)
    assert report["process"]["latest_state"] == "COMPLETED", report
    assert report["cr"] == "OK"
    zipped = second.http.get(f"software/muse/content/bash/{running_key}/")
    assert b"b.txt" in zipped.content
    third_key = second.submit(token, cmd="true")
    assert second.state(third_key)["process"]["jobname"] == "3-ws-bash"


def test_parent_pid_gone_stops_the_service_and_leaves_jobs_running(served, tmp_path):
    parent = subprocess.Popen(["sleep", "60"])
    try:
        server = served("--parent-pid", str(parent.pid))
        login = {"username": "alice", "password": PASSWORDS["alice"]}
        token = server.http.post("jwt/obtain/", json=login).json()["token"]
        key = server.submit(token, cmd="sleep 1.5; echo done > done.txt")
        server.wait(key, lambda r: r["process"]["latest_state"] == "RUNNING")
    finally:
        parent.kill()
        parent.wait()
    server.process.wait(timeout=10)
    assert server.process.returncode == 0
    done = tmp_path / "state" / "runs" / key / "done.txt"
    deadline = time.monotonic() + 10
    while not done.exists():
        assert time.monotonic() < deadline, "the job did not outlive the service"
        time.sleep(0.1)


def test_hash_password_reads_stdin():
    done = subprocess.run(
        [*MODULE, "hash-password", "--iterations", "1000"],
        input="s3cret\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    encoded = done.stdout.strip()
    assert encoded.startswith("pbkdf2_sha256$1000$")
    assert check_password("s3cret", encoded)
    assert not check_password("other", encoded)
    empty = subprocess.run(
        [*MODULE, "hash-password"], input="", capture_output=True, text=True
    )
    assert empty.returncode == 2 and "empty password" in empty.stderr


def test_a_docker_software_without_image_stops_start_up_clearly(tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("softwares:\n  tool:\n    type: docker\n    image: alpine:3\n")
    done = subprocess.run(
        [*MODULE, "serve", "--port", "0", "--state-dir", str(tmp_path / "s"),
         "--catalog", str(catalog)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "build tool.sif docker://alpine:3" in done.stderr
    assert "image: /path/tool.sif" in done.stderr
