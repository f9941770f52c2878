"""Fixtures for tests against a real SLURM (and a real Apptainer) on this machine.

``slurm_cluster`` skips, with the reason shown, unless ``scontrol ping`` says the
controller is UP; start one with ``scripts/slurm-node.sh start``. With
``MUSE_REQUIRE_SLURM=1`` (set by .ci/run once it has started SLURM) it fails instead,
so that CI cannot pass with its SLURM tests quietly skipped. ``tiny_image`` skips
unless apptainer/singularity is on PATH, and builds the busybox image once per session.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from snakemake_executor_muse.service.backends.base import BackendJob, BackendState
from snakemake_executor_muse.service.backends.slurm import SlurmBackend

REPO = Path(__file__).resolve().parents[2]
BATCH_NAME = "__WS__batch.sh"


def slurm_answers() -> str | None:
    """None when SLURM's controller answers; otherwise why it does not."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return "sbatch/scontrol are not on PATH (run scripts/slurm-node.sh start)"
    try:
        done = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return "scontrol ping did not answer within 15 s"
    if "UP" not in done.stdout:
        text = (done.stdout + done.stderr).strip()
        return f"scontrol ping: {text} (run scripts/slurm-node.sh start)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip the test unless a SLURM controller answers ``scontrol ping``."""
    reason = slurm_answers()
    if reason and os.environ.get("MUSE_REQUIRE_SLURM") == "1":
        pytest.fail(f"MUSE_REQUIRE_SLURM=1 but no SLURM: {reason}")
    if reason:
        pytest.skip(f"no SLURM: {reason}")


@pytest.fixture
def backend(slurm_cluster: None) -> SlurmBackend:
    return SlurmBackend(query_timeout=20)


@pytest.fixture
def make_job(tmp_path: Path) -> Callable[..., BackendJob]:
    """A run folder holding the given batch script, as a BackendJob.

    ``{run}`` in the script's body stands for the run folder's path.
    """
    counter = iter(range(1, 1000))

    def make(body: str, *options: tuple[str, str]) -> BackendJob:
        number = next(counter)
        run_path = tmp_path / f"run{number}"
        run_path.mkdir()
        script = run_path / BATCH_NAME
        script.write_text("#!/bin/bash\n" + body.replace("{run}", str(run_path)) + "\n")
        script.chmod(0o755)
        return BackendJob(
            key=f"test-{number}",
            job_name=f"{number}-ws-slurmtest",
            run_path=run_path,
            script=script,
            sbatch_options=tuple(options),
        )

    return make


def wait_for(
    backend: SlurmBackend,
    job_id: str,
    done: Callable[[BackendState], bool],
    timeout: float = 60,
    seen: list[str] | None = None,
) -> BackendState:
    """Poll until ``done(state)``; ``seen`` collects each distinct state observed."""
    deadline = time.monotonic() + timeout
    while True:
        state = backend.poll([job_id]).get(job_id)
        if state is not None and seen is not None and state.state not in seen[-1:]:
            seen.append(state.state)
        if state is not None and done(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {state} after {timeout} s")
        time.sleep(0.3)


def wait_terminal(
    backend: SlurmBackend, job_id: str, timeout: float = 60, seen=None
) -> BackendState:
    return wait_for(backend, job_id, lambda s: s.terminal, timeout, seen)


def scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job -o ID`` as a dict of its KEY=VALUE fields."""
    done = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)


def container_runtime() -> str | None:
    return shutil.which("apptainer") or shutil.which("singularity")


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox SIF built by scripts/build-tiny-image.sh (skips without apptainer)."""
    if container_runtime() is None:
        pytest.skip(
            "no apptainer/singularity on PATH (run scripts/apptainer-install.sh)"
        )
    image = tmp_path_factory.mktemp("image") / "tiny.sif"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-tiny-image.sh"), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(f"build-tiny-image.sh failed: {done.stderr.strip()[-800:]}")
    return image
