"""SlurmBackend's command lines and parsers on text SLURM 22.05 printed on this
machine; no SLURM needed. The backend's runner is replaced by canned answers."""

from pathlib import Path

import pytest

from snakemake_executor_muse.service import runner
from snakemake_executor_muse.service.backends import slurm
from snakemake_executor_muse.service.backends.base import BackendJob, BackendRejected
from snakemake_executor_muse.service.backends.slurm import (
    SOURCE_JOBCOMP,
    SOURCE_SACCT,
    SOURCE_SCONTROL,
    SlurmBackend,
)

RUN = Path("/srv/muse/runs/k1")


def a_job(*options: tuple[str, str]) -> BackendJob:
    return BackendJob(
        key="k1",
        job_name="7-ws-bwa",
        run_path=RUN,
        script=RUN / "__WS__batch.sh",
        sbatch_options=options,
    )


def test_sbatch_argv_keeps_options_in_order_after_the_fixed_ones():
    argv = slurm.sbatch_argv(a_job(("time", "10"), ("exclusive", ""), ("qos", "fast")))
    assert argv == [
        "sbatch",
        "--parsable",
        "--job-name",
        "7-ws-bwa",
        "--chdir",
        str(RUN),
        "--output",
        f"{RUN}/__WS__stdout.txt",
        "--error",
        f"{RUN}/__WS__stderr.txt",
        "--time=10",
        "--exclusive",
        "--qos=fast",
        f"{RUN}/__WS__batch.sh",
    ]


def test_mail_type_defaults_to_all_only_when_not_given():
    assert "--mail-type=ALL" in slurm.sbatch_argv(a_job(("mail-user", "a@b.fr")))
    argv = slurm.sbatch_argv(a_job(("mail-user", "a@b.fr"), ("mail-type", "END")))
    assert "--mail-type=END" in argv
    assert "--mail-type=ALL" not in argv
    assert not any("mail" in a for a in slurm.sbatch_argv(a_job(("time", "1"))))


@pytest.mark.parametrize("option", ["output", "error", "chdir", "job-name", "wrap"])
def test_options_that_would_move_the_run_are_rejected(option):
    with pytest.raises(BackendRejected, match=f"--{option}.*remove them"):
        slurm.sbatch_argv(a_job((option, "x")))


def test_job_environment_drops_the_services_secrets():
    env = {"PATH": "/bin", "MUSE_JWT_SECRET": "s", "DB_PASSWORD": "p", "HOME": "/r"}
    assert slurm.job_environment(env) == {"PATH": "/bin", "HOME": "/r"}


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [("42\n", "42"), ("42;cluster\n", "42"), ("sbatch: warning: x\n43\n", "43")],
)
def test_parse_job_id(stdout, job_id):
    assert slurm.parse_job_id(stdout) == job_id


def test_parse_job_id_refuses_what_is_not_an_id():
    with pytest.raises(BackendRejected, match="expected a job id"):
        slurm.parse_job_id("Submitted batch job\n")


def test_parse_squeue_decodes_raw_wait_status():
    text = (
        "1|FAILED|NonZeroExitCode|768|\n2|CANCELLED|None|15|\n3|PENDING|Resources|0|\n"
    )
    states = slurm.parse_squeue(text)
    assert (states["1"].state, states["1"].exit_code) == ("FAILED", 3)
    assert states["1"].reason == "NonZeroExitCode"
    assert (states["2"].exit_code, states["2"].extra["signal"]) == (0, "15")
    assert states["2"].reason == ""
    assert states["3"].exit_code is None
    assert not states["3"].terminal


def test_parse_history_normalises_cancelled_by_and_keeps_the_newest_row():
    text = (
        "5|CANCELLED by 0|0:0|None\n6|FAILED|2:0|\n6|COMPLETED|0:0|\n7|TIMEOUT|0:0|\n"
    )
    states = slurm.parse_history(text, SOURCE_SACCT)
    assert states["5"].state == "CANCELLED"
    assert states["5"].extra["state_detail"] == "CANCELLED by 0"
    assert (states["6"].state, states["6"].exit_code) == ("COMPLETED", 0)
    assert states["7"].state == "TIMEOUT"
    assert states["7"].extra["source"] == SOURCE_SACCT


def test_parse_scontrol_job():
    line = (
        "JobId=9 JobName=x JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
        "ExitCode=0:15 RunTime=00:01:10\n"
    )
    state = slurm.parse_scontrol_job(line)
    assert state is not None
    assert (state.state, state.reason, state.exit_code) == ("TIMEOUT", "TimeLimit", 0)
    assert state.extra["signal"] == "15"
    assert slurm.parse_scontrol_job("") is None


@pytest.mark.parametrize(
    ("config", "source"),
    [
        ("AccountingStorageType   = accounting_storage/slurmdbd\n", SOURCE_SACCT),
        (
            "AccountingStorageType   = accounting_storage/none\n"
            "JobCompType             = jobcomp/filetxt\n",
            SOURCE_JOBCOMP,
        ),
        ("AccountingStorageType = accounting_storage/none\n", SOURCE_SCONTROL),
        ("", SOURCE_SCONTROL),
    ],
)
def test_history_source(config, source):
    assert slurm.history_source(config) == source


class CannedRunner:
    """Stands in for runner.run: answers by program name, records every call."""

    def __init__(self, answers: dict[str, list[runner.CommandResult]]):
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        return self.answers[argv[0]].pop(0)


def result(argv0: str, code: int, out: str = "", err: str = "") -> runner.CommandResult:
    return runner.CommandResult((argv0,), code, out, err)


def test_poll_asks_history_only_for_ids_squeue_does_not_know(monkeypatch):
    canned = CannedRunner(
        {
            "squeue": [result("squeue", 0, "11|RUNNING|None|0|\n")],
            "scontrol": [result("scontrol", 0, "JobCompType = jobcomp/filetxt\n")],
            "sacct": [result("sacct", 0, "12|COMPLETED|0:0|\n")],
        }
    )
    monkeypatch.setattr(runner, "run", canned)
    states = SlurmBackend().poll(["11", "12"])

    assert states["11"].state == "RUNNING"
    assert states["12"].state == "COMPLETED"
    assert canned.calls[0][:2] == ["squeue", "--jobs=11,12"]
    assert canned.calls[2][:3] == ["sacct", "-c", "-X"]
    assert "12" in canned.calls[2] and "11" not in canned.calls[2]


def test_poll_gives_no_news_when_squeue_cannot_reach_slurmctld(monkeypatch, caplog):
    down = "slurm_load_jobs error: Unable to contact slurm controller"
    canned = CannedRunner({"squeue": [result("squeue", 1, err=down)] * 3})
    monkeypatch.setattr(runner, "run", canned)
    clock = iter([0.0, 1000.0, 2000.0]).__next__
    backend = SlurmBackend(lost_after=1, clock=clock)

    # however long slurmctld is away, its jobs are not declared lost
    assert [backend.poll(["11"]) for _ in range(3)] == [{}, {}, {}]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, "the same problem is said once, not every poll"
    assert down in warnings[0].getMessage()


def test_history_source_is_asked_again_when_detection_failed(monkeypatch):
    unknown = result("squeue", 1, err="slurm_load_jobs error: Invalid job id specified")
    canned = CannedRunner(
        {
            "squeue": [unknown, unknown],
            "scontrol": [
                result("scontrol", 1, err="Unable to contact slurm controller"),
                result("scontrol", 0, "JobCompType = jobcomp/filetxt\n"),
            ],
            "sacct": [result("sacct", 0, "12|TIMEOUT|0:0|\n")],
        }
    )
    monkeypatch.setattr(runner, "run", canned)
    backend = SlurmBackend()

    assert backend.poll(["12"]) == {}
    assert backend.poll(["12"])["12"].state == "TIMEOUT"


def test_submit_rejection_carries_sbatchs_own_message(monkeypatch):
    err = (
        "sbatch: error: invalid partition specified: nope\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    )
    monkeypatch.setattr(
        runner, "run", CannedRunner({"sbatch": [result("x", 1, "", err)]})
    )
    with pytest.raises(BackendRejected) as caught:
        SlurmBackend().submit(a_job(("partition", "nope")))
    assert str(caught.value) == err.strip()
