"""Snakemake killed while Muse jobs run (field case BC-18): the next run follows
the keys recorded in the incomplete markers instead of submitting again."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from muse_e2e import run_snakemake

pytestmark = pytest.mark.e2e

SLOW_CHAIN = """
rule all:
    input: "z/after.txt"

rule slow:
    output: "z/slow.txt"
    shell: "sleep {seconds}; echo slow > {{output}}"

rule after:
    input: "z/slow.txt"
    output: "z/after.txt"
    shell: "cat {{input}} > {{output}}"
"""


def service_db(folder: Path) -> Path:
    return folder / ".snakemake/muse/service/muse.sqlite3"


def submissions(folder: Path) -> list[tuple[str, str]]:
    """(key, job name) of every job the local service received."""
    with sqlite3.connect(service_db(folder)) as db:
        return db.execute("SELECT key, job_name FROM jobs ORDER BY seq").fetchall()


def recorded_keys(folder: Path) -> list[str]:
    markers = (folder / ".snakemake/incomplete").glob("*")
    return [json.loads(m.read_text())["external_jobid"] for m in markers]


def start_and_kill_after_submission(folder: Path) -> str:
    """Start Snakemake, SIGKILL it once a job is submitted; return the key."""
    argv = [sys.executable, "-m", "snakemake", "--executor", "muse", "--jobs", "2"]
    argv += ["--seconds-between-status-checks", "1", "--directory", str(folder)]
    with open(folder / "first.log", "w") as log:
        process = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not (folder / ".snakemake/incomplete").is_dir() or not recorded_keys(
            folder
        ):
            assert time.monotonic() < deadline, (folder / "first.log").read_text()
            assert process.poll() is None, (folder / "first.log").read_text()
            time.sleep(0.1)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    (key,) = recorded_keys(folder)
    wait_for_service_exit(folder)
    # what a user does after a kill: the lock of the killed run stays behind
    unlocked = run_snakemake(folder, "--unlock")
    assert unlocked.returncode == 0, unlocked.output
    return key


def wait_for_service_exit(folder: Path) -> None:
    """The killed run's service notices its parent is gone (--parent-pid)."""
    deadline = time.monotonic() + 15
    while service_alive(folder):
        assert time.monotonic() < deadline, "the orphaned local service kept running"
        time.sleep(0.1)


def service_alive(folder: Path) -> bool:
    state_dir = str(folder / ".snakemake/muse/service")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"snakemake_executor_muse.service" in command and state_dir.encode() in (
            command
        ):
            return True
    return False


def wait_for_job_end(folder: Path, key: str, timeout: float = 30) -> None:
    exit_file = folder / ".snakemake/muse/service/runs" / key / "__WS__exitcode"
    deadline = time.monotonic() + timeout
    while not exit_file.exists():
        assert time.monotonic() < deadline, f"job {key} did not end"
        time.sleep(0.1)


def test_rerun_follows_a_job_still_running(workflow):
    folder = workflow(SLOW_CHAIN.format(seconds=4))
    key = start_and_kill_after_submission(folder)

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    assert f"reattached to key {key}" in run.output
    assert (folder / "z/after.txt").read_text() == "slow\n"
    jobs = submissions(folder)
    assert [name.split("-ws-")[0] for _, name in jobs] == ["1", "2"]
    assert jobs[0][0] == key
    assert len({k for k, _ in jobs}) == len(jobs) == 2  # no duplicate submission
    dry = run_snakemake(folder, "--dry-run")
    assert "Nothing to be done" in dry.output, dry.output


def test_rerun_collects_a_job_that_finished_meanwhile(workflow):
    folder = workflow(SLOW_CHAIN.format(seconds=1))
    key = start_and_kill_after_submission(folder)
    wait_for_job_end(folder, key)

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    assert f"reattached to key {key}" in run.output
    assert (folder / "z/slow.txt").read_text() == "slow\n"
    assert len(submissions(folder)) == 2


def test_rerun_submits_again_a_key_the_service_forgot(workflow):
    folder = workflow(SLOW_CHAIN.format(seconds=1))
    key = start_and_kill_after_submission(folder)
    wait_for_job_end(folder, key)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{service_db(folder)}{suffix}").unlink(missing_ok=True)

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    assert f"no longer knows key {key}" in run.output
    assert "submitting the job again" in run.output
    assert key not in [k for k, _ in submissions(folder)]
    assert len(submissions(folder)) == 2
    assert (folder / "z/after.txt").read_text() == "slow\n"
