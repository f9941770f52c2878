"""A batch script that runs `singularity exec` on the tiny image, submitted through
SlurmBackend: the container sees the run folder, bound at the same path, as its
working directory (scripts/apptainer-install.sh provides apptainer)."""

import pytest

from .conftest import wait_terminal

pytestmark = [pytest.mark.slurm, pytest.mark.container]


def test_singularity_exec_in_a_slurm_job_runs_in_the_run_folder(
    backend, make_job, tiny_image
):
    job = make_job(
        f"singularity exec --bind {{run}}:{{run}} --pwd {{run}} {tiny_image} "
        "sh -c 'pwd; cat input.txt; echo made > output.txt; "
        "grep -c busybox /proc/self/maps || true'",
        ("time", "2"),
        ("mem", "200M"),
    )
    (job.run_path / "input.txt").write_text("from the host\n")

    final = wait_terminal(backend, backend.submit(job))

    stderr = (job.run_path / "__WS__stderr.txt").read_text()
    assert final.state == "COMPLETED", stderr
    lines = (job.run_path / "__WS__stdout.txt").read_text().splitlines()
    assert lines[:2] == [str(job.run_path), "from the host"]
    # /proc/self/maps of the container's shell shows busybox: it ran in the image
    assert int(lines[2]) >= 1
    assert (job.run_path / "output.txt").read_text() == "made\n"


def test_container_exit_code_reaches_slurm(backend, make_job, tiny_image):
    job = make_job(
        f"singularity exec --bind {{run}}:{{run}} --pwd {{run}} {tiny_image} "
        "sh -c 'exit 5'",
        ("time", "2"),
    )

    final = wait_terminal(backend, backend.submit(job))
    assert (final.state, final.exit_code) == ("FAILED", 5)
