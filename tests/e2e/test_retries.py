"""--retries with attempt-scaled resources (field case BC-19): every attempt is a
fresh Muse submission with its own key and its own sbatch_list."""

import json
import math
import re
import sqlite3

import pytest
from muse_e2e import run_snakemake

pytestmark = pytest.mark.e2e

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def stored_requests(folder):
    database = folder / ".snakemake/muse/service/muse.sqlite3"
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT key, request_json FROM jobs ORDER BY seq")
        return [(key, json.loads(text)) for key, text in rows]


def test_each_attempt_is_a_new_submission_with_scaled_resources(workflow):
    folder = workflow(
        """
        def mem_for(wc, attempt):
            return 1000 * attempt

        def time_for(wc, attempt):
            return 10 * attempt

        rule flaky:
            output: "f/out.txt"
            retries: 2
            resources: mem_mb=mem_for, runtime=time_for
            shell:
                "echo attempt {resources.mem_mb} >&2; "
                "test {resources.mem_mb} -ge 3000 || exit 4; echo ok > {output}"
        """
    )

    run = run_snakemake(folder, "f/out.txt")

    assert run.returncode == 0, run.output
    assert (folder / "f/out.txt").read_text() == "ok\n"
    requests = stored_requests(folder)
    assert len(requests) == 3
    assert len({key for key, _ in requests}) == 3
    for attempt, (_key, request) in enumerate(requests, start=1):
        mib = math.ceil(1000 * attempt * 10**6 / 2**20)
        assert f"mem={mib}M" in request["sbatch_list"], request
        assert f"time={10 * attempt}" in request["sbatch_list"], request
        assert request["cmd"] == "bash muse_job.sh"
    failed_keys = re.findall(rf"Muse job ({UUID}) \(rule flaky", run.output)
    assert failed_keys == [key for key, _ in requests[:2]]
    errors = run.output.split("Error in rule flaky")[1:]
    assert len(errors) == 2
    for error in errors:
        assert "Muse/SLURM state: FAILED" in error
        assert "command exit code 4" in error
    for attempt, key in enumerate(failed_keys, start=1):
        saved = folder / ".snakemake/muse/logs/flaky/no_wildcards" / key
        stderr = (saved / "__WS__stderr.txt").read_text()
        assert f"attempt {1000 * attempt}" in stderr
