"""Starts and stops the local Muse service for a run with no ``--muse-url``.

The service runs as ``python -m snakemake_executor_muse.service serve`` on
127.0.0.1 with a free port, with the backend of ``--muse-local-backend`` (local
processes, SLURM, or auto), its state under ``.snakemake/muse/service/``, and a
users file (mode 0600) holding one user with a password made for this run only.
The user's random name is kept in the state folder, so that a later run owns, and
may cancel, the jobs of a killed one. The plugin then obtains a JWT through
``jwt/obtain/`` like any client. The service is stopped by its PID at the end of
the run, and it also exits by itself when the Snakemake process is gone
(``--parent-pid``), leaving its jobs running for the next run to follow.
"""

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from snakemake_interface_common.exceptions import WorkflowError

from snakemake_executor_muse.settings import LOCAL_BACKENDS

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# A random 32-byte password needs no key stretching: a low iteration count keeps
# the start fast (the service hashes once per jwt/obtain too).
ONE_RUN_HASH_ITERATIONS = 10_000


@dataclass
class EmbeddedService:
    """A running local service and the one-run credentials for it."""

    process: subprocess.Popen[bytes]
    url: str
    username: str
    password: str
    state_dir: Path
    any_software: bool
    log_path: Path

    def stop(self) -> None:
        """Terminate, wait, and kill if it does not go."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


def hash_password(password: str) -> str:
    """The service's own hash function (one place, so the format stays theirs)."""
    from snakemake_executor_muse.service.auth import hash_password as service_hash

    return service_hash(password, iterations=ONE_RUN_HASH_ITERATIONS)


def write_users_file(path: Path, username: str, password: str) -> None:
    """A users file with one user allowed to run any software, mode 0600."""
    import yaml

    content = yaml.safe_dump(
        {
            "users": {
                username: {"password_hash": hash_password(password), "softwares": ["*"]}
            }
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(content)
    os.chmod(path, 0o600)


def stable_username(state_dir: Path) -> str:
    """The local user's name, the same for every run on this state folder.

    Jobs belong to the user that submitted them, and only their owner may cancel
    them: a run that follows the keys of a killed run must be that owner. The
    password is new for every run."""
    name_file = state_dir / "username"
    if name_file.is_file():
        name = name_file.read_text().strip()
        if name.startswith("run-"):
            return name
    name = f"run-{secrets.token_hex(6)}"
    name_file.write_text(name + "\n")
    return name


def service_command(
    port_file: Path,
    state_dir: Path,
    users_file: Path,
    catalog: Path | None,
    backend: str = "local",
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "snakemake_executor_muse.service",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--state-dir",
        str(state_dir),
        "--users",
        str(users_file),
        "--parent-pid",
        str(os.getpid()),
        "--backend",
        backend,
    ]
    if catalog is not None:
        command += ["--catalog", str(catalog)]
    else:
        command.append("--any-software")
    return command


def start(
    workdir: Path, catalog: Path | None, backend: str = "local"
) -> EmbeddedService:
    """Start the service and wait (bounded) until it has written its port.

    ``backend`` is ``--muse-local-backend``: local, slurm or auto.
    """
    if backend not in LOCAL_BACKENDS:
        raise WorkflowError(
            f"--muse-local-backend {backend!r}: expected one of "
            f"{', '.join(LOCAL_BACKENDS)}."
        )
    if catalog is not None and not catalog.is_file():
        raise WorkflowError(
            f"--muse-local-catalog {catalog}: no such file. Give the path of a "
            "software catalog (YAML), or leave the option out to run any software "
            "on this host."
        )
    state_dir = (workdir / ".snakemake" / "muse" / "service").resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    port_file = state_dir / "port"
    port_file.unlink(missing_ok=True)
    users_file = state_dir / "users.yaml"
    username = stable_username(state_dir)
    password = secrets.token_urlsafe(32)
    write_users_file(users_file, username, password)
    log_path = state_dir / "service.log"

    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            service_command(port_file, state_dir, users_file, catalog, backend),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    port = _wait_for_port(process, port_file, log_path)
    return EmbeddedService(
        process=process,
        url=f"http://127.0.0.1:{port}/api/",
        username=username,
        password=password,
        state_dir=state_dir,
        any_software=catalog is None,
        log_path=log_path,
    )


def _wait_for_port(
    process: subprocess.Popen[bytes], port_file: Path, log_path: Path
) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text.isdecimal():
            return int(text)
        if process.poll() is not None:
            raise WorkflowError(
                f"The local Muse service exited with code {process.returncode} "
                f"before it was ready. Its log ({log_path}) ends with:\n"
                f"{_tail(log_path)}"
            )
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=STOP_TIMEOUT)
    raise WorkflowError(
        f"The local Muse service did not start within {START_TIMEOUT:.0f} s. Its "
        f"log ({log_path}) ends with:\n{_tail(log_path)}\nGive --muse-url to use a "
        "running service instead."
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            return _last_lines(handle, lines)
    except OSError:
        return "(no log)"


def _last_lines(handle: IO[bytes], lines: int) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - 16384))
    text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"
