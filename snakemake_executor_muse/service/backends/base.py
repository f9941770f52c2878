"""The contract between the service's job manager and the places jobs run.

A backend starts a prepared run folder's batch script and reports states in SLURM's
vocabulary. The job manager (``service/jobs.py``) owns the store and the run folders; a
backend owns only its way of running a script and of asking how it went.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: States after which a job never changes again.
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)


@dataclass(frozen=True)
class BackendJob:
    """What a backend needs to start one run."""

    key: str
    job_name: str
    run_path: Path
    #: bash script in the run folder that runs the command and writes the std files
    script: Path
    #: normalised sbatch options, e.g. ("time", "10"), ("cpus-per-task", "2")
    sbatch_options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BackendState:
    """One observation of a job: the raw SLURM state and what came with it."""

    state: str
    exit_code: int | None = None
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Backend(Protocol):
    """A place where run folders' batch scripts run."""

    name: str

    def submit(self, job: BackendJob) -> str:
        """Start the job; return the backend's id for it (a SLURM job id, a PID).

        Raises ``BackendRejected`` with the scheduler's own message when the job cannot
        be accepted (unknown partition, too much memory, ...).
        """
        ...

    def poll(self, ids: list[str]) -> dict[str, BackendState]:
        """Return the state of every given id, in one batched query per call."""
        ...

    def cancel(self, backend_id: str) -> None:
        """Ask for the job to stop; the state becomes CANCELLED on a later poll."""
        ...

    def close(self) -> None:
        """Release what the backend holds; running jobs are left running."""
        ...


class BackendRejected(Exception):
    """The backend refused a job; the message is the scheduler's own."""
