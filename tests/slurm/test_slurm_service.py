"""The local service with its SLURM backend, driven through the HTTP API: what reached
SLURM, and the state report (``latest_state`` raw from SLURM, ``latest_cr``, ``cr``)
through a job's life."""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from snakemake_executor_muse.service.app import ServiceConfig, create_app
from snakemake_executor_muse.service.auth import hash_password

from .conftest import scontrol_job

pytestmark = pytest.mark.slurm

API = "/api/"


class Muse:
    """A logged-in client of the service under test."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def submit(self, software: str, cmd: str, sbatch_list: list[str]) -> Any:
        return self.client.post(
            f"{API}software/muse/run/{software}/",
            data={
                "cmd": cmd,
                "returned_type": "stdout",
                "sbatch_list": json.dumps(sbatch_list),
            },
            headers=self.headers,
        )

    def state(self, url: str) -> dict[str, Any]:
        reply = self.client.get(url)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def follow(self, url: str, timeout: float = 60) -> list[tuple[str, str, str]]:
        """Poll the state URL to the end; the distinct (latest_state, latest_cr,
        cr) triples seen, in order."""
        seen: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = self.state(url)["info"]["report"]
            process = report["process"]
            now = (process["latest_state"], process["latest_cr"], report["cr"])
            if now not in seen[-1:]:
                seen.append(now)
            if report["cr"] != "WAIT":
                return seen
            time.sleep(0.3)
        raise AssertionError(f"job still waiting after {timeout} s: {seen}")


@pytest.fixture
def muse(slurm_cluster: None, tmp_path: Path) -> Iterator[Muse]:
    with serve(tmp_path, None) as client:
        yield client


@contextmanager
def serve(tmp_path: Path, catalog: Path | None) -> Iterator[Muse]:
    """The service on a fresh state folder, with one user allowed everything."""
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n  tester:\n"
        f'    password_hash: "{hash_password("pw", iterations=1000)}"\n'
        '    softwares: ["*"]\n'
    )
    config = ServiceConfig(
        state_dir=tmp_path / "state",
        users_file=users,
        backend="slurm",
        catalog_file=catalog,
    )
    with TestClient(create_app(config)) as client:
        reply = client.post(
            f"{API}jwt/obtain/", json={"username": "tester", "password": "pw"}
        )
        assert reply.status_code == 200, reply.text
        yield Muse(client, reply.json()["token"])


def test_job_through_the_api_reaches_slurm_and_completes(muse):
    reply = muse.submit(
        "bash", "echo hello; pwd; sleep 2", ["time=5", "--mem=100M", "-p short"]
    )
    assert reply.status_code == 200, reply.text
    state_url = reply.json()["url"]
    key = state_url.rstrip("/").rsplit("/", 1)[-1]

    process = muse.state(state_url)["info"]["report"]["process"]
    fields = scontrol_job(str(process["job_id"]))
    assert fields["JobName"] == process["jobname"]
    assert process["jobname"].endswith("-ws-bash")
    assert (fields["Partition"], fields["TimeLimit"]) == ("short", "00:05:00")
    assert fields["MinMemoryNode"] == "100M"
    assert fields["WorkDir"].endswith(key)

    seen = muse.follow(state_url)
    assert seen[-1] == ("COMPLETED", "ENDED_OK", "OK")
    assert ("RUNNING", "IN_PROGRESS", "WAIT") in seen, seen
    assert {s[0] for s in seen[:-1]} <= {"PENDING", "RUNNING", "COMPLETING"}

    result = muse.client.get(f"{API}software/muse/run/bash/{key}/")
    assert result.status_code == 200, result.text
    assert result.json()["info"]["stdout"].splitlines() == ["hello", fields["WorkDir"]]


def test_failing_job_reports_failed_and_its_exit_code(muse):
    reply = muse.submit("bash", "echo broken >&2; exit 3", ["time=1"])
    state_url = reply.json()["url"]

    assert muse.follow(state_url)[-1] == ("FAILED", "ENDED_NOK", "NOK")
    process = muse.state(state_url)["info"]["report"]["process"]
    assert process["exit_code"] == 3


def test_unknown_partition_is_refused_with_slurms_message(muse):
    reply = muse.submit("bash", "true", ["partition=no-such-partition"])

    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["type"] == "bad_request"
    assert "invalid partition" in body["error"].lower()


def test_cancel_through_the_api_ends_cancelled(muse):
    reply = muse.submit("bash", "sleep 300", ["time=10"])
    urls = reply.json()["urls"]
    deadline = time.monotonic() + 60
    while muse.state(urls["state"])["info"]["report"]["process"]["latest_state"] != (
        "RUNNING"
    ):
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.3)

    cancelled = muse.client.post(urls["cancel"], headers=muse.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert muse.follow(urls["state"], timeout=30)[-1] == (
        "CANCELLED",
        "ENDED_NOK",
        "NOK",
    )


@pytest.mark.container
def test_image_software_runs_in_the_container_in_its_run_folder(
    slurm_cluster, tiny_image, tmp_path
):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        f"softwares:\n  tiny:\n    image: {tiny_image}\n    type: singularity\n"
    )
    cmd = "sh -c 'pwd; grep -c busybox /proc/self/maps'"
    with serve(tmp_path, catalog) as muse:
        reply = muse.submit("tiny", cmd, ["time=2"])
        assert reply.status_code == 200, reply.text
        state_url = reply.json()["url"]
        key = state_url.rstrip("/").rsplit("/", 1)[-1]

        assert muse.follow(state_url)[-1] == ("COMPLETED", "ENDED_OK", "OK")
        result = muse.client.get(f"{API}software/muse/run/tiny/{key}/")
    assert result.status_code == 200, result.text
    lines = result.json()["info"]["stdout"].splitlines()
    assert lines[0].endswith(f"/runs/{key}")
    assert int(lines[1]) >= 1  # grep ran from the image's busybox
