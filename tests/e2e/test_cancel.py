"""Ctrl-C while Muse jobs run (field case BC-17): cancelled through the local
service's cancel extension, a failing cancel reported by key, and the keys left
running listed when the service has no cancel request."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from muse_mock import start_mock

pytestmark = pytest.mark.e2e

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SLEEPERS = """
rule all:
    input: expand("w/{{i}}.txt", i=range({count}))

rule w:
    output: "w/{{i}}.txt"
    shell: "sleep 600; echo {{wildcards.i}} > {{output}}"
"""


def start_snakemake(folder: Path, jobs: int, *args: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "snakemake", "--executor", "muse"]
    argv += ["--jobs", str(jobs), "--seconds-between-status-checks", "1"]
    argv += ["--directory", str(folder), *args]
    env = {**os.environ, "SNAKEMAKE_MUSE_JWT": "MOCK-JWT-1234"}
    with open(folder / "snakemake.log", "w") as log:
        return subprocess.Popen(argv, cwd=folder, stdout=log, stderr=log, env=env)


def wait_for_submissions(folder: Path, process, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while output(folder).count("submitted as key") < count:
        assert process.poll() is None, output(folder)
        assert time.monotonic() < deadline, output(folder)
        time.sleep(0.2)


def output(folder: Path) -> str:
    return (folder / "snakemake.log").read_text()


def interrupt(process) -> float:
    """SIGINT (Ctrl-C); return the seconds Snakemake took to exit."""
    started = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return time.monotonic() - started


def service_states(folder: Path) -> list[str]:
    database = folder / ".snakemake/muse/service/muse.sqlite3"
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT state FROM jobs")]


def sleepers_left(folder: Path) -> list[int]:
    """PIDs of job processes still running from this test's run folders."""
    runs = str(folder / ".snakemake/muse/service/runs")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(runs):
            found.append(int(entry.name))
    return found


def wait_until_no_sleepers(folder: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sleepers_left(folder):
        assert time.monotonic() < deadline, sleepers_left(folder)
        time.sleep(0.2)


def test_ctrl_c_cancels_jobs_on_the_local_service(workflow):
    folder = workflow(SLEEPERS.format(count=3))
    process = start_snakemake(folder, 3)
    wait_for_submissions(folder, process, 3, timeout=60)

    seconds = interrupt(process)

    assert process.returncode != 0
    assert seconds < 15, output(folder)
    assert "Muse: cancelled 3 job(s)." in output(folder)
    assert sorted(service_states(folder)) == ["CANCELLED"] * 3
    wait_until_no_sleepers(folder)
    submitted = output(folder).count("submitted as key")
    assert submitted == 3  # nothing new after the signal


@pytest.mark.parametrize("advertised", [True, False])
def test_ctrl_c_against_a_service_that_cannot_cancel(
    workflow, tmp_path_factory, advertised
):
    scenario = {"state": ["running"], "cancel": ["500"]}
    scenario["cancel_advertised"] = advertised
    service = start_mock(tmp_path_factory.mktemp("mock"), scenario)
    folder = workflow(SLEEPERS.format(count=3))
    try:
        process = start_snakemake(
            folder, 3, "--muse-url", service.url, "--muse-software", "bash"
        )
        wait_for_submissions(folder, process, 3, timeout=60)
        seconds = interrupt(process)
    finally:
        service.stop()

    text = output(folder)
    keys = set(re.findall(rf"submitted as key ({UUID})", text))
    assert len(keys) == 3
    assert seconds < 15, text
    for key in keys:
        follow = rf"^\s+{key} \(w\): GET http://127\.0\.0\.1:\d+/api/software/"
        assert re.search(rf"{follow}muse/state/bash/{key}/$", text, re.MULTILINE), text
    if advertised:
        cancels = service.events("cancel")
        assert {e["key"] for e in cancels} == keys
        assert len(cancels) == 3 * 3  # retried briefly, then reported
        for key in keys:
            assert f"could not cancel key {key}, cancel it manually" in text
    else:
        assert service.events("cancel") == []
        assert "3 job(s) keep running on Muse" in text


@pytest.mark.slow
def test_ctrl_c_with_300_jobs_in_flight(workflow):
    folder = workflow(SLEEPERS.format(count=300))
    process = start_snakemake(folder, 300, "--max-status-checks-per-second", "50")
    wait_for_submissions(folder, process, 300, timeout=240)

    seconds = interrupt(process)

    print(f"Ctrl-C with 300 jobs in flight: Snakemake exited after {seconds:.1f} s")
    assert process.returncode != 0
    assert seconds < 20, output(folder)
    assert "Muse: cancelled 300 job(s)." in output(folder)
    wait_until_no_sleepers(folder)
    assert set(service_states(folder)) == {"CANCELLED"}
