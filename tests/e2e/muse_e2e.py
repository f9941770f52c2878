"""Shared pieces of the end-to-end tests: real Snakemake, plugin and local service."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMTOOLS_EXAMPLES = Path("/usr/share/doc/samtools/examples")

#: (chromosome, position) of every record the example workflow writes into
#: calls.vcf from the samtools example data (NA18507), with Debian 12's bwa
#: 0.7.17, samtools 1.16.1 and bcftools 1.16, whichever way its jobs run
EXPECTED_SITES = {
    ("seq1", 548),
    ("seq1", 1294),
    ("seq2", 505),
    ("seq2", 784),
    ("seq2", 1344),
}


@dataclass
class SnakemakeRun:
    """What one `snakemake` invocation did."""

    returncode: int
    output: str
    workdir: Path
    seconds: float


def run_snakemake(
    workdir: Path, *args: str, timeout: float = 300, env: dict | None = None
) -> SnakemakeRun:
    """Run Snakemake with the muse executor in ``workdir``; return code and output."""
    argv = [
        sys.executable,
        "-m",
        "snakemake",
        "--executor",
        "muse",
        "--jobs",
        "4",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "0",
        "--directory",
        str(workdir),
        *args,
    ]
    full_env = {**os.environ, **(env or {})}
    started = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
    seconds = time.monotonic() - started
    return SnakemakeRun(done.returncode, done.stdout + done.stderr, workdir, seconds)
