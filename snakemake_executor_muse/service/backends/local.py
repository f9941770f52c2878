"""The local backend: batch scripts run as subprocesses within a CPU budget.

Each job's batch script runs through a small bash wrapper, in its own session, in its
run folder, with stdout and stderr going to ``__WS__stdout.txt`` and
``__WS__stderr.txt``. A job uses ``cpus-per-task`` x ``ntasks`` CPUs (1 by default);
jobs wait as PENDING while the budget is full, and a job that asks for more than the
whole budget is refused the way sbatch would refuse it. The ``time`` option is
enforced: the job's process group is killed and the job reported as TIMEOUT. ``mem``
is recorded in ``__WS__local.json`` but not enforced: a plain subprocess has no
memory limit here, so a job that needs more simply uses it.

Everything the backend must know about a job lives in files of its run folder, so a
restarted service can take over jobs it did not start:

- ``__WS__local.json``: the job's CPUs, time limit and memory request;
- ``__WS__pid``: PID, kernel start time (to tell a reused PID apart) and start epoch;
- ``__WS__exitcode``: the batch script's exit code, written by the wrapper;
- ``__WS__killed``: ``TIMEOUT`` or ``CANCELLED`` when the backend stopped the job.

The backend's id of a job is its run folder's name (the Muse key).
"""

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runner
from ..sbatch import option_value, time_limit_seconds
from .base import BackendJob, BackendRejected, BackendState

logger = logging.getLogger(__name__)

META_FILE = "__WS__local.json"
PID_FILE = "__WS__pid"
EXIT_CODE_FILE = "__WS__exitcode"
KILLED_FILE = "__WS__killed"
STDOUT_FILE = "__WS__stdout.txt"
STDERR_FILE = "__WS__stderr.txt"

# Runs the batch script, then records its exit code atomically: a restarted service
# reads it to learn how a job it did not start ended.
WRAPPER = (
    'bash "$1"; code=$?; '
    f'printf "%s\\n" "$code" > {EXIT_CODE_FILE}.tmp && '
    f"mv -f {EXIT_CODE_FILE}.tmp {EXIT_CODE_FILE}; "
    'exit "$code"'
)


@dataclass
class _LocalJob:
    """What the backend tracks for one job."""

    key: str
    run_path: Path
    script: Path
    cpus: int
    time_limit: int | None
    state: str = "PENDING"
    pid: int | None = None
    start_ticks: str = ""
    started_at: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    kill_sent_at: float | None = None
    exit_code: int | None = None
    reason: str = ""

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


def process_start_ticks(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) of a live PID, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name, in parentheses, may itself contain spaces or parentheses
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]


class LocalBackend:
    """Runs batch scripts as local subprocesses; see the module docstring."""

    name = "local"

    def __init__(
        self, runs_dir: Path, cpus: int | None = None, kill_grace: float = 10.0
    ) -> None:
        self.runs_dir = runs_dir
        self.cpus = cpus if cpus is not None else (os.cpu_count() or 1)
        self.kill_grace = kill_grace
        self._jobs: dict[str, _LocalJob] = {}
        self._queue: list[str] = []
        self._lock = threading.Lock()

    def submit(self, job: BackendJob) -> str:
        cpus = _job_cpus(job.sbatch_options)
        if cpus > self.cpus:
            raise BackendRejected(
                "sbatch: error: CPU count per node can not be satisfied; "
                "sbatch: error: Batch job submission failed: Requested node "
                f"configuration is not available (the job asks for {cpus} CPUs, "
                f"cpus-per-task x ntasks; this local service has {self.cpus}, "
                "set with muse serve --cpus)"
            )
        time_value = option_value(job.sbatch_options, "time")
        meta: dict[str, Any] = {
            "script": str(job.script),
            "cpus": cpus,
            "time_limit": time_limit_seconds(time_value) if time_value else None,
            "mem": option_value(job.sbatch_options, "mem"),
            "mem_per_cpu": option_value(job.sbatch_options, "mem-per-cpu"),
            "job_name": job.job_name,
        }
        (job.run_path / META_FILE).write_text(json.dumps(meta))
        key = job.run_path.name
        with self._lock:
            self._jobs[key] = _LocalJob(
                key, job.run_path, job.script, cpus, meta["time_limit"]
            )
            self._queue.append(key)
            self._start_pending()
        return key

    def poll(self, ids: list[str]) -> dict[str, BackendState]:
        with self._lock:
            for backend_id in ids:
                if backend_id not in self._jobs:
                    self._adopt(backend_id)
            self._advance()
            return {backend_id: self._observe(backend_id) for backend_id in ids}

    def cancel(self, backend_id: str) -> None:
        with self._lock:
            if backend_id not in self._jobs:
                self._adopt(backend_id)
            job = self._jobs.get(backend_id)
            if job is None or job.state not in {"PENDING", "RUNNING"}:
                return
            if job.state == "PENDING":
                self._queue.remove(backend_id)
                _write_killed(job, "CANCELLED")
                job.state, job.reason = "CANCELLED", "cancelled while pending"
                return
            self._stop(job, "CANCELLED")

    def close(self) -> None:
        """Running jobs keep running: a restarted service takes them over."""
        with self._lock:
            running = [job.key for job in self._jobs.values() if job.running]
        if running:
            logger.info("leaving %d local jobs running", len(running))

    def _observe(self, backend_id: str) -> BackendState:
        job = self._jobs.get(backend_id)
        if job is None:
            return BackendState(
                "FAILED",
                reason="the local backend has no trace of this job: its run folder "
                f"or {META_FILE} is missing",
            )
        extra = {"cpus": str(job.cpus)}
        if job.pid is not None:
            extra["pid"] = str(job.pid)
        return BackendState(job.state, job.exit_code, job.reason, extra)

    def _advance(self) -> None:
        now = time.time()
        for job in self._jobs.values():
            if job.running:
                self._check_running(job, now)
        self._start_pending()

    def _check_running(self, job: _LocalJob, now: float) -> None:
        if not self._alive(job):
            self._finish(job)
            return
        if job.kill_sent_at is None:
            if job.time_limit is not None and now - job.started_at > job.time_limit:
                logger.info(
                    "job %s reached its time limit of %ss", job.key, job.time_limit
                )
                self._stop(job, "TIMEOUT")
        elif now - job.kill_sent_at > self.kill_grace and job.pid is not None:
            runner.kill_group(job.pid, signal.SIGKILL)

    def _alive(self, job: _LocalJob) -> bool:
        if job.process is not None:
            return job.process.poll() is None
        if job.pid is None:
            return False
        seen = process_start_ticks(job.pid)
        # a zombie, or another process that got the same PID, means the job is over
        return seen is not None and seen[0] != "Z" and seen[1] == job.start_ticks

    def _stop(self, job: _LocalJob, verdict: str) -> None:
        _write_killed(job, verdict)
        job.kill_sent_at = time.time()
        if job.pid is not None:
            runner.kill_group(job.pid, signal.SIGTERM)

    def _finish(self, job: _LocalJob) -> None:
        killed = _read_text(job.run_path / KILLED_FILE)
        code_text = _read_text(job.run_path / EXIT_CODE_FILE)
        job.exit_code = int(code_text) if code_text.lstrip("-").isdigit() else None
        if killed in {"TIMEOUT", "CANCELLED"}:
            job.state = killed
            job.reason = "time limit reached" if killed == "TIMEOUT" else "cancelled"
        elif job.exit_code == 0:
            job.state = "COMPLETED"
        elif job.exit_code is not None:
            job.state, job.reason = "FAILED", f"exit code {job.exit_code}"
        else:
            signal_text = ""
            if job.process is not None and (job.process.returncode or 0) < 0:
                signal_text = f" (signal {-(job.process.returncode or 0)})"
            job.state = "FAILED"
            job.reason = f"the job's process ended without an exit code{signal_text}"
        job.process = None
        logger.info("local job %s ended: %s %s", job.key, job.state, job.reason)

    def _start_pending(self) -> None:
        free = self.cpus - sum(job.cpus for job in self._jobs.values() if job.running)
        for key in list(self._queue):
            job = self._jobs[key]
            if job.cpus <= free:
                self._queue.remove(key)
                self._spawn(job)
                free -= job.cpus
            else:
                job.reason = "Resources"

    def _spawn(self, job: _LocalJob) -> None:
        try:
            job.process = runner.spawn(
                ["bash", "-c", WRAPPER, "muse-local-job", str(job.script)],
                cwd=job.run_path,
                stdout_path=job.run_path / STDOUT_FILE,
                stderr_path=job.run_path / STDERR_FILE,
            )
        except runner.CommandFailedToStart as exc:
            job.state, job.reason = "FAILED", str(exc)
            return
        job.pid = job.process.pid
        seen = process_start_ticks(job.pid)
        job.start_ticks = seen[1] if seen else ""
        job.started_at = time.time()
        job.state, job.reason = "RUNNING", ""
        pid_line = f"{job.pid} {job.start_ticks} {job.started_at}\n"
        (job.run_path / PID_FILE).write_text(pid_line)
        logger.debug("local job %s started as PID %s", job.key, job.pid)

    def _adopt(self, backend_id: str) -> None:
        """Take over a job that an earlier run of the service submitted."""
        run_path = self.runs_dir / backend_id
        try:
            meta = json.loads((run_path / META_FILE).read_text())
        except (OSError, ValueError):
            return
        job = _LocalJob(
            backend_id,
            run_path,
            Path(meta["script"]),
            int(meta["cpus"]),
            meta["time_limit"],
        )
        self._jobs[backend_id] = job
        pid_fields = _read_text(run_path / PID_FILE).split()
        if not pid_fields:
            if (run_path / KILLED_FILE).exists():
                job.state, job.reason = "CANCELLED", "cancelled while pending"
            else:
                self._queue.append(backend_id)
            return
        job.pid, job.start_ticks = int(pid_fields[0]), pid_fields[1]
        job.started_at = float(pid_fields[2])
        job.state = "RUNNING"
        if (run_path / KILLED_FILE).exists():
            job.kill_sent_at = time.time()
        logger.info("took over local job %s (PID %s)", backend_id, job.pid)


def _job_cpus(options: tuple[tuple[str, str], ...]) -> int:
    per_task = option_value(options, "cpus-per-task") or "1"
    tasks = option_value(options, "ntasks") or "1"
    return int(per_task) * int(tasks)


def _write_killed(job: _LocalJob, verdict: str) -> None:
    (job.run_path / KILLED_FILE).write_text(verdict)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
