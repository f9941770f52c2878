"""The SLURM backend: run folders' batch scripts as SLURM jobs, through the CLI.

It owns the sbatch command line of a run, the batched state queries (squeue for the
jobs slurmctld still holds, then the cluster's job history for the others) and their
parsing into SLURM's own vocabulary. Every command goes through ``runner.run``.

Where a finished job's state comes from depends on the cluster, and is detected once
from ``scontrol show config``: plain ``sacct`` with slurmdbd accounting, else
``sacct -c`` when job completion is logged to a file (jobcomp/filetxt), else
``scontrol show job`` per job as a last resort (it knows only what squeue knows, so a
job purged after MinJobAge ends up reported as lost).
"""

import logging
import os
import re
import time
from collections.abc import Callable, Iterable

from snakemake_executor_muse.sbatch_options import SERVICE_OWNED_OPTIONS
from snakemake_executor_muse.service import runner
from snakemake_executor_muse.service.backends.base import (
    TERMINAL_STATES,
    BackendJob,
    BackendRejected,
    BackendState,
)

logger = logging.getLogger(__name__)

STDOUT_NAME = "__WS__stdout.txt"
STDERR_NAME = "__WS__stderr.txt"

#: options the service sets itself; a run must not move its own std files or folder
RESERVED_OPTIONS = frozenset(SERVICE_OWNED_OPTIONS)

#: squeue fields: the exit code is the raw wait status (768 is exit 3)
SQUEUE_FORMAT = "JobID:|,State:|,Reason:|,exit_code:|"
HISTORY_FIELDS = "JobIDRaw,State,ExitCode,Reason"

#: how a finished job's state is found once slurmctld has forgotten the job
SOURCE_SACCT = "sacct"
SOURCE_JOBCOMP = "sacct -c"
SOURCE_SCONTROL = "scontrol"

#: names of environment variables that must not reach a user's job
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|JWT|CREDENTIAL", re.I)
_NO_REASON = frozenset({"", "None", "(null)"})


# -- command lines -------------------------------------------------------------------


def sbatch_argv(job: BackendJob) -> list[str]:
    """The sbatch command that submits a run's batch script from its run folder.

    Raises ``BackendRejected`` when an option would move the run's folder or files.
    """
    options = dict(job.sbatch_options)
    reserved = sorted(RESERVED_OPTIONS.intersection(options))
    if reserved:
        raise BackendRejected(
            f"sbatch option(s) {', '.join('--' + o for o in reserved)} cannot be set "
            "in sbatch_list: the service sets them itself for every run; "
            "remove them from sbatch_list"
        )

    run = job.run_path
    argv = [
        "sbatch",
        "--parsable",
        "--job-name",
        job.job_name,
        "--chdir",
        str(run),
        "--output",
        str(run / STDOUT_NAME),
        "--error",
        str(run / STDERR_NAME),
    ]
    argv += [
        f"--{name}={value}" if value else f"--{name}"
        for name, value in job.sbatch_options
    ]
    # Muse's documented default: mail on every state change once mail-user is given
    if "mail-user" in options and "mail-type" not in options:
        argv.append("--mail-type=ALL")
    argv.append(str(job.script))
    return argv


def squeue_argv(ids: Iterable[str]) -> list[str]:
    # --states=all: without it squeue hides jobs that have already ended
    return [
        "squeue",
        f"--jobs={','.join(ids)}",
        "--states=all",
        "-h",
        "-O",
        SQUEUE_FORMAT,
    ]


def history_argv(source: str, ids: Iterable[str]) -> list[str]:
    argv = ["sacct"] + (["-c"] if source == SOURCE_JOBCOMP else [])
    return argv + ["-X", "-n", "-P", "-j", ",".join(ids), "-o", HISTORY_FIELDS]


def job_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment sbatch passes on to jobs (it exports all by default).

    The service's own secrets (JWT signing key, passwords) stay out of users' jobs.
    """
    return {k: v for k, v in environ.items() if not _SECRET_NAME.search(k)}


# -- parsing -------------------------------------------------------------------------


def parse_job_id(sbatch_stdout: str) -> str:
    """The job id from ``sbatch --parsable`` ("123" or "123;cluster")."""
    lines = sbatch_stdout.strip().splitlines()
    # the id is the last line; sbatch may warn on the lines before it
    job_id = lines[-1].split(";", 1)[0].strip() if lines else ""
    if not job_id.isdigit():
        raise BackendRejected(
            f"sbatch printed {sbatch_stdout.strip()!r}; expected a job id (a number)"
        )
    return job_id


def normalise_state(raw: str) -> tuple[str, str]:
    """SLURM's state word and what came after it: "CANCELLED by 0" -> CANCELLED."""
    word, _, detail = raw.strip().partition(" ")
    return word.rstrip("+"), detail.strip()


def clean_reason(reason: str) -> str:
    return "" if reason.strip() in _NO_REASON else reason.strip()


def parse_exit_pair(text: str) -> tuple[int | None, int]:
    """ "N:S" from sacct/scontrol -> (exit code N, signal S); ("", 0) -> (None, 0)."""
    code, _, signal = text.strip().partition(":")
    if not code.isdigit():
        return None, 0
    return int(code), int(signal) if signal.isdigit() else 0


def parse_wait_status(text: str) -> tuple[int | None, int]:
    """squeue's raw wait status -> (exit code, signal), as scontrol prints them."""
    if not text.strip().isdigit():
        return None, 0
    status = int(text)
    signal = status & 0x7F
    if signal:
        return 0, signal
    return (status >> 8) & 0xFF, 0


def make_state(
    raw_state: str, exit_pair: tuple[int | None, int], reason: str, source: str
) -> BackendState:
    state, detail = normalise_state(raw_state)
    extra = {"source": source}
    if detail:
        extra["state_detail"] = raw_state.strip()
    exit_code, signal = exit_pair
    if signal:
        extra["signal"] = str(signal)
    if state not in TERMINAL_STATES:  # a running job has no exit code yet
        exit_code = None
    return BackendState(
        state=state, exit_code=exit_code, reason=clean_reason(reason), extra=extra
    )


def parse_squeue(stdout: str) -> dict[str, BackendState]:
    """Rows of ``squeue -O JobID:|,State:|,Reason:|,exit_code:|``."""
    states: dict[str, BackendState] = {}
    for line in stdout.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 4 or not fields[0]:
            continue
        job_id, state, reason, status = fields[:4]
        states[job_id] = make_state(state, parse_wait_status(status), reason, "squeue")
    return states


def parse_history(stdout: str, source: str) -> dict[str, BackendState]:
    """Rows of ``sacct [-c] -X -n -P -o JobIDRaw,State,ExitCode,Reason``.

    A job requeued, or an id reused after a state wipe, has several rows: the last
    one is the newest.
    """
    states: dict[str, BackendState] = {}
    for line in stdout.splitlines():
        fields = line.split("|")
        if len(fields) < 3 or not fields[0].strip():
            continue
        reason = fields[3] if len(fields) > 3 else ""
        job_id = fields[0].strip()
        states[job_id] = make_state(
            fields[1], parse_exit_pair(fields[2]), reason, source
        )
    return states


def parse_scontrol_job(stdout: str) -> BackendState | None:
    """One ``scontrol show job -o ID`` line -> its state, None when absent."""
    fields = dict(item.split("=", 1) for item in stdout.split() if "=" in item)
    if "JobState" not in fields:
        return None
    return make_state(
        fields["JobState"],
        parse_exit_pair(fields.get("ExitCode", "")),
        fields.get("Reason", ""),
        SOURCE_SCONTROL,
    )


def history_source(config_text: str) -> str:
    """Which history the cluster keeps, from ``scontrol show config``."""
    config = {}
    for line in config_text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            config[name.strip()] = value.strip()
    if config.get("AccountingStorageType", "accounting_storage/none") not in (
        "accounting_storage/none",
        "",
    ):
        return SOURCE_SACCT
    if config.get("JobCompType") == "jobcomp/filetxt":
        return SOURCE_JOBCOMP
    return SOURCE_SCONTROL


# -- the backend ---------------------------------------------------------------------


class SlurmBackend:
    """Runs batch scripts with sbatch and follows them with one batched query a poll.

    Args:
        submit_timeout: seconds sbatch may take before the submission counts as failed.
        query_timeout: seconds squeue, sacct or scontrol may take.
        lost_after: seconds a job may stay unknown to every source (accounting can
            lag behind slurmctld) before it is reported as lost, in a terminal state.
        clock: a monotonic clock, replaceable in tests.
    """

    name = "slurm"

    def __init__(
        self,
        *,
        submit_timeout: float = 60.0,
        query_timeout: float = 30.0,
        lost_after: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.submit_timeout = submit_timeout
        self.query_timeout = query_timeout
        self.lost_after = lost_after
        self._clock = clock
        self._history_source: str | None = None
        self._missing_since: dict[str, float] = {}
        self._last_warning = ""

    def submit(self, job: BackendJob) -> str:
        argv = sbatch_argv(job)
        result = runner.run(
            argv,
            timeout=self.submit_timeout,
            cwd=job.run_path,
            env=job_environment(dict(os.environ)),
        )
        if not result.ok:
            # sbatch's own words ("invalid partition specified: nope") reach the user
            message = result.stderr.strip() or result.describe()
            logger.info("sbatch refused %s: %s", job.key, message)
            raise BackendRejected(message)

        job_id = parse_job_id(result.stdout)
        logger.info("submitted %s as SLURM job %s (%s)", job.key, job_id, job.job_name)
        return job_id

    def poll(self, ids: list[str]) -> dict[str, BackendState]:
        """States of the given job ids: squeue first, then the job history.

        An id missing from the answer means "no news" (the scheduler did not
        answer); the caller asks again on its next poll.
        """
        if not ids:
            return {}
        states = self._query_squeue(ids)
        if states is None:
            return {}

        missing = [i for i in ids if i not in states]
        if missing:
            history = self._query_history(missing)
            if history is None:
                return states
            states.update(history)
        if self._last_warning:
            logger.info("SLURM answers again")
            self._last_warning = ""
        return self._account_for_missing(ids, states)

    def cancel(self, backend_id: str) -> None:
        result = runner.run(["scancel", backend_id], timeout=self.query_timeout)
        if result.ok:
            logger.info("asked SLURM to cancel job %s", backend_id)
            return
        text = result.stderr
        if "Invalid job id" in text or "already completing or completed" in text:
            # the job is over or gone; the next poll reports how it ended
            logger.info("SLURM job %s had already ended: %s", backend_id, text.strip())
            return
        raise BackendRejected(text.strip() or result.describe())

    def close(self) -> None:
        """Nothing to release: SLURM keeps the jobs, and no process is held."""

    # -- queries ---------------------------------------------------------------------

    def _query_squeue(self, ids: list[str]) -> dict[str, BackendState] | None:
        result = self._run_query(squeue_argv(ids))
        if result is None:
            return None
        if result.ok:
            return parse_squeue(result.stdout)
        if "Invalid job id" in result.stderr:
            # squeue fails like this when it knows none of the ids: not an error
            return {}
        self._warn(f"squeue failed, will ask again: {result.describe()}")
        return None

    def _query_history(self, ids: list[str]) -> dict[str, BackendState] | None:
        source = self._detect_history_source()
        if source is None:
            return None
        if source == SOURCE_SCONTROL:
            return self._query_scontrol(ids)

        result = self._run_query(history_argv(source, ids))
        if result is None:
            return None
        if not result.ok:
            self._warn(f"{source} failed, will ask again: {result.describe()}")
            return None
        return parse_history(result.stdout, source)

    def _query_scontrol(self, ids: list[str]) -> dict[str, BackendState] | None:
        states: dict[str, BackendState] = {}
        for job_id in ids:
            result = self._run_query(["scontrol", "show", "job", "-o", job_id])
            if result is None:
                return None
            state = parse_scontrol_job(result.stdout) if result.ok else None
            if state is not None:
                states[job_id] = state
        return states

    def _detect_history_source(self) -> str | None:
        """The cluster's job history, asked once; None while slurmctld is away."""
        if self._history_source is None:
            result = self._run_query(["scontrol", "show", "config"])
            if result is None or not result.ok:
                return None
            self._history_source = history_source(result.stdout)
            logger.info(
                "finished SLURM jobs are looked up with %s", self._history_source
            )
        return self._history_source

    def _run_query(self, argv: list[str]) -> runner.CommandResult | None:
        try:
            return runner.run(argv, timeout=self.query_timeout)
        except runner.CommandFailedToStart as exc:
            self._warn(f"SLURM query failed, will ask again: {exc}")
            return None

    def _warn(self, message: str) -> None:
        # polls come every second or so: say each distinct problem once
        if message != self._last_warning:
            logger.warning("%s", message)
            self._last_warning = message
        else:
            logger.debug("%s", message)

    def _account_for_missing(
        self, ids: list[str], states: dict[str, BackendState]
    ) -> dict[str, BackendState]:
        """Report as lost the ids that every source has ignored for lost_after s."""
        now = self._clock()
        for job_id in ids:
            if job_id in states:
                self._missing_since.pop(job_id, None)
                continue
            first_missed = self._missing_since.setdefault(job_id, now)
            waited = now - first_missed
            if waited >= self.lost_after:
                states[job_id] = lost_state(job_id, waited, self._history_source)
                self._missing_since.pop(job_id, None)
        return states


def lost_state(job_id: str, waited: float, source: str | None) -> BackendState:
    """The terminal state of a job SLURM no longer knows anything about."""
    return BackendState(
        state="FAILED",
        reason=(
            f"SLURM job {job_id} is unknown to squeue and to {source} since "
            f"{waited:.0f} s; it was purged or never accepted, so how it ended "
            "cannot be known (enable slurmdbd accounting or JobCompType=jobcomp/"
            "filetxt to keep finished jobs' states)"
        ),
        extra={"source": "lost"},
    )
