"""The local backend: time limit, CPU budget, cancel, taking over after a restart."""

import time
from pathlib import Path

import pytest
from muse_service_helpers import key_of, submit, wait_state

from snakemake_executor_muse.service.backends import make_backend
from snakemake_executor_muse.service.backends.base import BackendJob, BackendRejected
from snakemake_executor_muse.service.backends.local import LocalBackend


def running(report):
    return report["process"]["latest_state"] == "RUNNING"


def test_time_limit_gives_timeout(client, token):
    started = time.monotonic()
    key = key_of(
        submit(client, token, "bash", cmd="sleep 30", sbatch_list=["-t", "00:01"])
    )
    report = wait_state(client, "bash", key, timeout=8)["info"]["report"]
    assert report["process"]["latest_state"] == "TIMEOUT"
    assert report["cr"] == "NOK"
    assert report["process"]["latest_cr"] == "ENDED_NOK"
    assert time.monotonic() - started < 6


def test_cpu_budget_queues_jobs_as_pending(client, token):
    first = key_of(
        submit(client, token, "bash", cmd="sleep 1", sbatch_list=["cpus-per-task=2"])
    )
    second = key_of(
        submit(client, token, "bash", cmd="true", sbatch_list=["-c 1", "-n 2"])
    )
    wait_state(client, "bash", first, running)
    waiting = wait_state(client, "bash", second, lambda r: True)["info"]["report"]
    assert waiting["process"]["latest_state"] == "PENDING"
    assert waiting["cr"] == "WAIT"
    assert waiting["process"]["latest_cr"] == "IN_PROGRESS"
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        report = wait_state(client, "bash", second, lambda r: True)["info"]["report"]
        seen.append(report["process"]["latest_state"])
        if report["cr"] != "WAIT":
            break
        time.sleep(0.05)
    assert seen[-1] == "COMPLETED"
    assert wait_state(client, "bash", first)["info"]["report"]["cr"] == "OK"


def test_cancel_while_pending(client, token):
    blocker = key_of(
        submit(client, token, "bash", cmd="sleep 30", sbatch_list=["-c 2"])
    )
    queued = key_of(submit(client, token, "bash", cmd="true"))
    wait_state(client, "bash", blocker, running)
    for key in (queued, blocker):
        client.post(f"/api/software/muse/cancel/bash/{key}/", json={"jwt": token})
        report = wait_state(client, "bash", key, timeout=5)["info"]["report"]
        assert report["process"]["latest_state"] == "CANCELLED"


def backend_job(run_path: Path, cmd: str, **options: str) -> BackendJob:
    run_path.mkdir(parents=True)
    script = run_path / "__WS__batch.sh"
    script.write_text(f"#!/bin/bash\n{cmd}\n")
    return BackendJob(
        run_path.name, "1-ws-test", run_path, script, tuple(options.items())
    )


def poll_until(backend, backend_id, states, timeout=8.0):
    deadline = time.monotonic() + timeout
    while True:
        seen = backend.poll([backend_id])[backend_id]
        if seen.state in states:
            return seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def test_a_new_backend_takes_over_a_running_job(tmp_path):
    runs = tmp_path / "runs"
    first = LocalBackend(runs, cpus=1)
    job_id = first.submit(backend_job(runs / "k1", "sleep 0.7; echo out; exit 4"))
    poll_until(first, job_id, {"RUNNING"})
    first.close()
    second = LocalBackend(runs, cpus=1)
    assert second.poll([job_id])[job_id].state == "RUNNING"
    ended = poll_until(second, job_id, {"FAILED", "COMPLETED"})
    assert (ended.state, ended.exit_code) == ("FAILED", 4)
    assert (runs / "k1" / "__WS__stdout.txt").read_text() == "out\n"


def test_a_reused_pid_is_not_taken_for_the_job(tmp_path):
    runs = tmp_path / "runs"
    backend = LocalBackend(runs, cpus=1)
    job_id = backend.submit(backend_job(runs / "k2", "sleep 5"))
    poll_until(backend, job_id, {"RUNNING"})
    pid_file = runs / "k2" / "__WS__pid"
    pid, _, started = pid_file.read_text().split()
    pid_file.write_text(f"{pid} 1 {started}\n")  # another start time: not the same
    other = LocalBackend(runs, cpus=1)
    seen = other.poll([job_id])[job_id]
    assert seen.state == "FAILED"
    assert "without an exit code" in seen.reason
    backend.cancel(job_id)
    poll_until(backend, job_id, {"CANCELLED"})


def test_a_pending_job_is_queued_again_after_a_restart(tmp_path):
    runs = tmp_path / "runs"
    first = LocalBackend(runs, cpus=1)
    blocker = first.submit(backend_job(runs / "b", "sleep 30"))
    queued = first.submit(backend_job(runs / "q", "echo later"))
    assert first.poll([queued])[queued].state == "PENDING"
    first.cancel(blocker)
    poll_until(first, blocker, {"CANCELLED"})
    second = LocalBackend(runs, cpus=1)
    ended = poll_until(second, queued, {"COMPLETED"})
    assert ended.exit_code == 0


def test_too_many_cpus_are_rejected(tmp_path):
    backend = LocalBackend(tmp_path, cpus=2)
    with pytest.raises(BackendRejected, match="Requested node configuration"):
        backend.submit(
            backend_job(tmp_path / "x", "true", **{"cpus-per-task": "2", "ntasks": "2"})
        )


def test_make_backend_names(tmp_path):
    backend = make_backend("local", runs_dir=tmp_path, cpus=3, unused=1)
    assert isinstance(backend, LocalBackend) and backend.cpus == 3
    with pytest.raises(ValueError, match="expected one of local, slurm, auto"):
        make_backend("pbs")
