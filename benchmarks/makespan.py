"""Makespan of a small workload: Snakemake's local executor versus `--executor muse`.

The workload follows the one in DESIGN.md, scaled to run in a minute or two: N
independent one-second jobs, a chain of C one-second jobs, and one aggregate. Both
runs happen one after the other in this one invocation, on the same machine, and the
script prints the two wall times and their ratio side by side. The muse run uses the
embedded local service (local backend; `--backend slurm` to compare on SLURM).

    .venv/bin/python benchmarks/makespan.py [--jobs 20] [--chain 5] [--backend local]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEFILE = """
N = {n}
C = {c}

rule all:
    input: "agg.txt"

rule independent:
    output: "ind/{{i}}.txt"
    shell: "sleep 1; echo {{wildcards.i}} > {{output}}"

rule chain:
    input: lambda wc: [] if int(wc.i) == 0 else [f"chain/{{int(wc.i) - 1}}.txt"]
    output: "chain/{{i}}.txt"
    shell: "sleep 1; echo {{wildcards.i}} > {{output}}"

rule aggregate:
    input:
        expand("ind/{{i}}.txt", i=range(N)),
        f"chain/{{C - 1}}.txt",
    output: "agg.txt"
    shell: "cat {{input}} > {{output}}"
"""


def run(folder: Path, extra: list[str]) -> float:
    """Run the workload in ``folder``; return the wall time in seconds."""
    argv = [sys.executable, "-m", "snakemake", "--directory", str(folder)]
    argv += ["--snakefile", str(folder / "Snakefile")]
    started = time.monotonic()
    subprocess.run(argv + extra, check=True, capture_output=True, timeout=1800)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--chain", type=int, default=5)
    parser.add_argument("--backend", choices=["local", "slurm"], default="local")
    args = parser.parse_args()

    text = SNAKEFILE.format(n=args.jobs, c=args.chain)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (
            ("local executor, --cores 2", ["--cores", "2"]),
            (
                f"--executor muse ({args.backend} backend)",
                [
                    "--executor",
                    "muse",
                    "--jobs",
                    "100",
                    "--muse-local-backend",
                    args.backend,
                    "--seconds-between-status-checks",
                    "1",
                ],
            ),
        ):
            folder = Path(tmp) / name.split()[0].strip("-")
            folder.mkdir()
            (folder / "Snakefile").write_text(text)
            results[name] = run(folder, extra)

    base = next(iter(results.values()))
    total = args.jobs + args.chain + 1
    print(
        f"workload: {args.jobs} independent + chain of {args.chain} + 1 = {total} jobs"
    )
    for name, seconds in results.items():
        print(f"{name:40s} {seconds:7.1f} s   ratio {seconds / base:5.2f}")


if __name__ == "__main__":
    main()
