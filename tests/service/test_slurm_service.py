"""The service on the SLURM backend: one documented example through sbatch."""

import shutil
import subprocess

import pytest
from muse_service_helpers import key_of, obtain_token, submit, wait_state


def slurm_is_up() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    done = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10)
    return done.returncode == 0


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not slurm_is_up(), reason="no running SLURM (sbatch, sinfo)"),
]


def test_example_a_through_sbatch(make_client):
    client = make_client(backend="slurm")
    token = obtain_token(client)
    key = key_of(
        submit(
            client, token, "sw_example", cmd="python add.py 4 5", sbatch_list=["-t 1"]
        )
    )
    report = wait_state(client, "sw_example", key, timeout=90)["info"]["report"]
    assert report["cr"] == "OK", report
    assert report["process"]["latest_state"] == "COMPLETED"
    assert report["process"]["job_id"] > 0
    result = client.get(f"/api/software/muse/run/sw_example/{key}/").json()
    assert result["info"]["stdout"] == "9.0"
