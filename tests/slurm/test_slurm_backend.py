"""SlurmBackend against the real SLURM of this machine: what SLURM received, and the
states it reported back (scripts/slurm-node.sh start brings one up)."""

import subprocess

import pytest

from snakemake_executor_muse.service import runner
from snakemake_executor_muse.service.backends.base import BackendRejected
from snakemake_executor_muse.service.backends.slurm import (
    SOURCE_JOBCOMP,
    SlurmBackend,
    history_argv,
    parse_history,
)

from .conftest import scontrol_job, wait_for, wait_terminal

pytestmark = pytest.mark.slurm


def has_partition(name: str) -> bool:
    done = subprocess.run(
        ["sinfo", "-h", "-p", name, "-o", "%P"], capture_output=True, text=True
    )
    return name in done.stdout


def test_options_reach_slurm_and_job_completes(backend, make_job):
    """Time, memory, CPUs and partition arrive in SLURM; the job runs in its folder."""
    if not has_partition("short"):
        pytest.skip("this SLURM has no 'short' partition (scripts/slurm-node.sh)")
    job = make_job(
        'echo "cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE"; pwd; sleep 2',
        ("time", "5"),
        ("mem", "200M"),
        ("cpus-per-task", "2"),
        ("partition", "short"),
    )
    job_id = backend.submit(job)

    fields = scontrol_job(job_id)
    assert fields["TimeLimit"] == "00:05:00"
    assert fields["MinMemoryNode"] == "200M"
    assert fields["NumCPUs"] == "2"
    assert fields["CPUs/Task"] == "2"
    assert fields["Partition"] == "short"
    assert fields["JobName"] == job.job_name
    assert fields["WorkDir"] == str(job.run_path)
    assert fields["StdOut"] == str(job.run_path / "__WS__stdout.txt")
    assert fields["StdErr"] == str(job.run_path / "__WS__stderr.txt")

    seen: list[str] = []
    final = wait_terminal(backend, job_id, seen=seen)
    assert final.state == "COMPLETED"
    assert final.exit_code == 0
    assert seen[-1] == "COMPLETED"
    assert set(seen[:-1]) <= {"PENDING", "RUNNING", "COMPLETING"}
    assert "RUNNING" in seen, f"never saw RUNNING: {seen}"
    stdout = (job.run_path / "__WS__stdout.txt").read_text().splitlines()
    assert stdout == ["cpus=2 mem=200", str(job.run_path)]


def test_failing_script_ends_failed_with_its_exit_code(backend, make_job):
    job = make_job("echo going to fail >&2; exit 3", ("time", "1"))
    job_id = backend.submit(job)

    final = wait_terminal(backend, job_id)
    assert (final.state, final.exit_code) == ("FAILED", 3)
    assert final.reason == "NonZeroExitCode"
    stderr = (job.run_path / "__WS__stderr.txt").read_text()
    assert stderr == "going to fail\n"


def test_cancel_of_running_job_ends_cancelled(backend, make_job):
    job_id = backend.submit(make_job("sleep 300", ("time", "10")))
    wait_for(backend, job_id, lambda s: s.state == "RUNNING", timeout=60)

    backend.cancel(job_id)
    final = wait_terminal(backend, job_id, timeout=30)
    assert final.state == "CANCELLED"
    assert final.extra.get("signal") == "15"


def test_cancel_of_finished_job_is_harmless(backend, make_job):
    job_id = backend.submit(make_job("true", ("time", "1")))
    wait_terminal(backend, job_id)

    backend.cancel(job_id)
    assert backend.poll([job_id])[job_id].state == "COMPLETED"


def test_unknown_partition_is_rejected_with_slurms_message(backend, make_job):
    with pytest.raises(BackendRejected) as caught:
        backend.submit(make_job("true", ("partition", "no-such-partition")))
    assert "invalid partition" in str(caught.value).lower()


def test_too_much_memory_is_rejected_with_slurms_message(backend, make_job):
    with pytest.raises(BackendRejected) as caught:
        backend.submit(make_job("true", ("mem", "100T")))
    assert "Requested node configuration is not available" in str(caught.value)


def test_mail_options_reach_slurm(backend, make_job):
    """mail-user passes through; mail-type defaults to ALL as on Muse."""
    job = make_job("true", ("time", "1"), ("mail-user", "someone@example.org"))
    job_id = backend.submit(job)

    fields = scontrol_job(job_id)
    assert fields["MailUser"] == "someone@example.org"
    assert {"BEGIN", "END", "FAIL"} <= set(fields["MailType"].split(","))
    assert wait_terminal(backend, job_id).state == "COMPLETED"


def test_one_batched_query_for_many_jobs(backend, make_job, monkeypatch):
    """Two live jobs and one id SLURM never had: one squeue, one history query."""
    ids = [backend.submit(make_job("sleep 1", ("time", "1"))) for _ in range(2)]
    # the first lookup of a missing id detects the history source (scontrol show
    # config) once; the count below is of a poll after that
    backend.poll([*ids, "987654"])
    calls: list[tuple[str, ...]] = []
    real_run = runner.run

    def counting_run(argv, **kwargs):
        calls.append(tuple(argv[:2]))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(runner, "run", counting_run)
    states = backend.poll([*ids, "987654"])

    assert set(states) == set(ids)
    assert [c[0] for c in calls] == ["squeue", "sacct"]
    for job_id in ids:
        wait_terminal(backend, job_id)


def test_job_unknown_to_every_source_is_reported_lost(slurm_cluster):
    clock = iter([0.0, 10.0, 500.0]).__next__
    backend = SlurmBackend(lost_after=120, clock=clock)

    assert backend.poll(["987654"]) == {}
    assert backend.poll(["987654"]) == {}
    lost = backend.poll(["987654"])["987654"]
    assert lost.state == "FAILED"
    assert lost.terminal
    assert "unknown to squeue" in lost.reason


def test_job_history_from_jobcomp(backend, make_job):
    """The finished job as ``sacct -c`` reports it, for when slurmctld purged it."""
    done = runner.run(["scontrol", "show", "config"])
    if "jobcomp/filetxt" not in done.stdout:
        pytest.skip("this SLURM does not log job completions (JobCompType)")
    job_id = backend.submit(make_job("exit 4", ("time", "1")))
    wait_terminal(backend, job_id)

    result = runner.run(history_argv(SOURCE_JOBCOMP, [job_id]))
    state = parse_history(result.stdout, SOURCE_JOBCOMP)[job_id]
    assert (state.state, state.exit_code) == ("FAILED", 4)


@pytest.mark.slow
def test_job_over_its_time_limit_ends_timeout(backend, make_job):
    """SLURM counts time in minutes and checks every 30 s: this takes 60-90 s."""
    job_id = backend.submit(make_job("sleep 300", ("time", "1")))

    final = wait_terminal(backend, job_id, timeout=150)
    assert final.state == "TIMEOUT"
    assert final.reason == "TimeLimit"


def test_job_over_its_memory_ends_out_of_memory_or_failed(backend, make_job):
    """cgroup v1 containment gives OUT_OF_MEMORY; OverMemoryKill ends it FAILED."""
    config = runner.run(["scontrol", "show", "config"]).stdout
    expected = "OUT_OF_MEMORY" if "proctrack/cgroup" in config else "FAILED"
    job = make_job(
        "python3 -c 'import time; x = bytearray(400 << 20); time.sleep(5)'",
        ("time", "1"),
        ("mem", "50M"),
    )

    final = wait_terminal(backend, backend.submit(job))
    assert final.state == expected, final
