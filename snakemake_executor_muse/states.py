"""The whole state table: Muse ``cr`` / ``latest_cr`` / ``latest_state`` -> verdict.

A state report carries three values: ``info.report.cr`` (OK, NOK, WAIT),
``info.report.process.latest_cr`` (IN_PROGRESS, ENDED_OK, ENDED_NOK) and
``info.report.process.latest_state`` (the raw SLURM job state). Each is mapped to
RUNNING, SUCCESS or FAILURE, or to UNKNOWN when the value is not in the table.

How the three are combined (documented in docs/further.md):

- any FAILURE wins: ``cr == "OK"`` with ``latest_state == "FAILED"`` is a failure,
  because a job whose batch step failed cannot be trusted to have its outputs;
- otherwise the job is finished only when ``cr`` says so (OK or NOK): the results
  are served only after ``cr == "OK"``, so a SLURM COMPLETED with ``cr == "WAIT"``
  keeps the job under watch until the service has caught up;
- an UNKNOWN value with no FAILURE elsewhere keeps the job under watch, and the
  executor fails it once ``--muse-unknown-state-grace`` has run out.
"""

import enum
from dataclasses import dataclass
from typing import Any


class Verdict(enum.Enum):
    """What the executor does with a job."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"


CR_TABLE = {
    "WAIT": Verdict.RUNNING,
    "OK": Verdict.SUCCESS,
    "NOK": Verdict.FAILURE,
}

LATEST_CR_TABLE = {
    "IN_PROGRESS": Verdict.RUNNING,
    "ENDED_OK": Verdict.SUCCESS,
    "ENDED_NOK": Verdict.FAILURE,
}

# Raw SLURM job states (sacct/squeue long names). PREEMPTED keeps the job under
# watch because SLURM usually requeues a preempted job; a warning is logged.
SLURM_STATE_TABLE = {
    "PENDING": Verdict.RUNNING,
    "CONFIGURING": Verdict.RUNNING,
    "RUNNING": Verdict.RUNNING,
    "COMPLETING": Verdict.RUNNING,
    "SUSPENDED": Verdict.RUNNING,
    "REQUEUED": Verdict.RUNNING,
    "REQUEUE_HOLD": Verdict.RUNNING,
    "REQUEUE_FED": Verdict.RUNNING,
    "RESIZING": Verdict.RUNNING,
    "STAGE_OUT": Verdict.RUNNING,
    "SIGNALING": Verdict.RUNNING,
    "PREEMPTED": Verdict.RUNNING,
    "COMPLETED": Verdict.SUCCESS,
    "FAILED": Verdict.FAILURE,
    "CANCELLED": Verdict.FAILURE,
    "TIMEOUT": Verdict.FAILURE,
    "OUT_OF_MEMORY": Verdict.FAILURE,
    "NODE_FAIL": Verdict.FAILURE,
    "BOOT_FAIL": Verdict.FAILURE,
    "DEADLINE": Verdict.FAILURE,
    "REVOKED": Verdict.FAILURE,
    "SPECIAL_EXIT": Verdict.FAILURE,
}

FAILURE_REASONS = {
    "FAILED": "the job's batch script exited with a non-zero code",
    "CANCELLED": "the job was cancelled (by a user, an administrator or SLURM)",
    "TIMEOUT": "the job exceeded its time limit; raise the rule's 'runtime' "
    "resource (minutes)",
    "OUT_OF_MEMORY": "the job ran out of memory; raise the rule's 'mem_mb' "
    "resource (or mem_mb_per_cpu)",
    "NODE_FAIL": "the node running the job failed; rerun it (--retries helps)",
    "BOOT_FAIL": "the node could not boot for the job; rerun it (--retries helps)",
    "DEADLINE": "the job reached its deadline before it could end",
    "REVOKED": "SLURM revoked the job (federated cluster)",
    "SPECIAL_EXIT": "the job ended in SLURM's SPECIAL_EXIT state",
    "NOK": "the Muse service reported the job as failed (cr=NOK)",
    "ENDED_NOK": "the Muse service reported the job as failed (ENDED_NOK)",
}

WARNING_STATES = {
    "PREEMPTED": "the job was preempted; waiting for SLURM to requeue it",
    "SUSPENDED": "the job is suspended",
}


@dataclass(frozen=True)
class StateReport:
    """One state answer, reduced to what the executor needs."""

    cr: str | None
    latest_cr: str | None
    latest_state: str | None
    job_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """The verdict on a job, with words for the user."""

    verdict: Verdict
    reason: str = ""
    warning: str = ""
    unknown: tuple[str, ...] = ()


def normalize_slurm_state(value: str | None) -> str | None:
    """``"CANCELLED by 0"`` -> ``CANCELLED``; ``"FAILED+"`` -> ``FAILED``."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if not text:
        return None
    return text.split()[0].rstrip("+")


def parse_state_report(body: Any) -> StateReport:
    """Pick ``cr``, ``latest_cr``, ``latest_state`` out of a state answer."""
    info = body.get("info", {}) if isinstance(body, dict) else {}
    report = info.get("report", {}) if isinstance(info, dict) else {}
    if not isinstance(report, dict):
        report = {}
    process = report.get("process") or {}
    if not isinstance(process, dict):
        process = {}
    job_id = process.get("job_id")
    return StateReport(
        cr=_text_or_none(report.get("cr")),
        latest_cr=_text_or_none(process.get("latest_cr")),
        latest_state=normalize_slurm_state(_text_or_none(process.get("latest_state"))),
        job_id=None if job_id is None else str(job_id),
    )


def _text_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value).strip().upper()


def decide(report: StateReport) -> Decision:
    """Combine the three values of a report into one decision (see module doc)."""
    verdicts: dict[str, Verdict] = {}
    unknown: list[str] = []
    for name, value, table in (
        ("cr", report.cr, CR_TABLE),
        ("latest_cr", report.latest_cr, LATEST_CR_TABLE),
        ("latest_state", report.latest_state, SLURM_STATE_TABLE),
    ):
        if value is None:
            continue
        verdict = table.get(value, Verdict.UNKNOWN)
        verdicts[name] = verdict
        if verdict is Verdict.UNKNOWN:
            unknown.append(f"{name}={value}")

    warning = WARNING_STATES.get(report.latest_state or "", "")
    if Verdict.FAILURE in verdicts.values():
        return Decision(Verdict.FAILURE, _failure_reason(report), warning)
    if unknown:
        return Decision(Verdict.UNKNOWN, "", warning, tuple(unknown))
    if verdicts.get("cr") is Verdict.SUCCESS:
        return Decision(Verdict.SUCCESS, "", warning)
    if not verdicts:
        return Decision(Verdict.UNKNOWN, "", warning, ("no cr or state in report",))
    return Decision(Verdict.RUNNING, "", warning)


def _failure_reason(report: StateReport) -> str:
    for value in (report.latest_state, report.latest_cr, report.cr):
        if value in FAILURE_REASONS:
            reason = FAILURE_REASONS[value]
            return f"{value}: {reason}"
    return "the Muse service reported a failure"
