"""The one place where the service starts other programs.

Everything the service runs (sbatch, squeue, sacct, scontrol, scancel, a job's batch
script) goes through ``run`` (short commands that return) or ``spawn`` (a job that runs
for long). Argument lists only, never a shell string; every short command has a timeout
and its stderr kept, so that a scheduler's own message can reach the user.
"""

import logging
import os
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class CommandResult:
    """What a short command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        """One line for an error message: the command, its code and its stderr."""
        text = self.stderr.strip() or self.stdout.strip() or "no output"
        return f"{' '.join(self.argv)} exited with {self.returncode}: {text}"


class CommandFailedToStart(Exception):
    """The program could not be started at all (missing, not executable, timed out)."""


def run(
    argv: list[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cwd: Path | None = None,
    stdin_text: str | None = None,
    env: dict[str, str] | None = None,
) -> CommandResult:
    """Run a short command to its end and return what it printed."""
    logger.debug("running %s", argv)
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            input=stdin_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandFailedToStart(f"{argv[0]} is not on PATH: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailedToStart(
            f"{' '.join(argv)} did not answer within {timeout:.0f} s"
        ) from exc
    except OSError as exc:
        raise CommandFailedToStart(f"{argv[0]} could not be started: {exc}") from exc
    return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def spawn(
    argv: list[str],
    *,
    cwd: Path,
    stdout_path: Path,
    stderr_path: Path,
    stdin_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running job in its own session, its output going to files.

    The job gets a session of its own so that a Ctrl-C in the terminal of whoever
    started the service does not reach it; it is stopped only through ``kill_group``.
    """
    logger.debug("spawning %s in %s", argv, cwd)
    try:
        with ExitStack() as files:
            stdin = (
                files.enter_context(open(stdin_path, "rb"))
                if stdin_path
                else subprocess.DEVNULL
            )
            out = files.enter_context(open(stdout_path, "ab"))
            err = files.enter_context(open(stderr_path, "ab"))
            return subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=stdin,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
    except OSError as exc:
        raise CommandFailedToStart(f"{argv[0]} could not be started: {exc}") from exc


def kill_group(pid: int, sig: int) -> bool:
    """Send a signal to the process group led by ``pid``; False when it is gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("not allowed to signal process group %s", pid)
        return False
    return True
