"""Shared pieces of the end-to-end tests: real Snakemake, plugin and local service."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMTOOLS_EXAMPLES = Path("/usr/share/doc/samtools/examples")


@dataclass
class SnakemakeRun:
    """What one `snakemake` invocation did."""

    returncode: int
    output: str
    workdir: Path


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
    done = subprocess.run(
        argv,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
    return SnakemakeRun(done.returncode, done.stdout + done.stderr, workdir)
