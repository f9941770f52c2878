"""Outputs coming back from Muse jobs (field cases BC-10, BC-13, BC-15): folders,
checkpoints, benchmarks, flags, directories, modes, symlinks and mtimes."""

import contextlib
import csv
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from muse_e2e import SnakemakeRun, run_snakemake

pytestmark = pytest.mark.e2e

BENCHMARK_COLUMNS = [
    "s",
    "h:m:s",
    "max_rss",
    "max_vms",
    "max_uss",
    "max_pss",
    "io_in",
    "io_out",
    "mean_load",
    "cpu_time",
]


def run_without_directory(folder, *args: str) -> SnakemakeRun:
    """Snakemake ignores the workdir: directive when --directory is given, which
    run_snakemake always passes: run in the folder itself instead."""
    argv = [sys.executable, "-m", "snakemake", "--executor", "muse", "--jobs", "4"]
    argv += ["--seconds-between-status-checks", "1", *args]
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=folder, capture_output=True, text=True, timeout=300, check=False
    )
    seconds = time.monotonic() - started
    return SnakemakeRun(done.returncode, done.stdout + done.stderr, folder, seconds)


def test_workdir_checkpoint_benchmark_touch_and_deep_folders(workflow):
    folder = workflow(
        """
        workdir: "wd"

        rule all:
            input: "flags/all.done", "a/b/c/d/deep.txt"

        checkpoint split:
            output: directory("parts")
            shell:
                "mkdir -p {output} && "
                "for i in 1 2 3; do echo $i > {output}/p$i.txt; done"

        def summed(wc):
            folder = checkpoints.split.get().output[0]
            return expand("sums/{n}.txt", n=glob_wildcards(folder + "/p{n}.txt").n)

        rule sum:
            input: "parts/p{n}.txt"
            output: "sums/{n}.txt"
            benchmark: "bench/sum_{n}.tsv"
            shell: "cat {input} > {output}"

        rule flag:
            input: summed
            output: touch("flags/all.done")
            shell: "echo counted"

        rule deep:
            output: "a/b/c/d/deep.txt"
            shell: "echo x > {output}"
        """
    )

    run = run_without_directory(folder, "--latency-wait", "0")

    assert run.returncode == 0, run.output
    wd = folder / "wd"
    assert not (wd / "wd").exists()
    assert sorted(p.name for p in (wd / "parts").iterdir()) == [
        "p1.txt",
        "p2.txt",
        "p3.txt",
    ]
    for n in (1, 2, 3):
        assert (wd / f"sums/{n}.txt").read_text() == f"{n}\n"
        with open(wd / f"bench/sum_{n}.tsv") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        assert rows[0] == BENCHMARK_COLUMNS
        assert len(rows) == 2
        assert float(rows[1][0]) >= 0.0
        assert rows[1][1].count(":") == 2
        assert rows[1][2:] == ["NA"] * 8
    assert (wd / "flags/all.done").exists()
    assert (wd / "a/b/c/d/deep.txt").read_text() == "x\n"
    assert "MissingOutputException" not in run.output
    assert not (folder / "parts").exists()
    assert run_without_directory(folder, "-n").output.count("Nothing to be done") == 1


def test_nested_empty_and_protected_directory_round_trip(workflow):
    folder = workflow(
        """
        rule all:
            input: "use/list.txt"

        rule db:
            output: protected(directory("db/index"))
            shell:
                "mkdir -p {output}/lvl1/lvl2 {output}/empty && "
                "echo k > {output}/lvl1/lvl2/k.txt"

        rule use:
            input: "db/index"
            output: "use/list.txt"
            shell: "find {input} | sort > {output}"
        """
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    index = folder / "db/index"
    assert (index / "lvl1/lvl2/k.txt").read_text() == "k\n"
    assert (index / "empty").is_dir() and not any((index / "empty").iterdir())
    assert not os.access(index / "lvl1/lvl2/k.txt", os.W_OK) or os.geteuid() == 0
    assert not (index / "lvl1/lvl2/k.txt").stat().st_mode & stat.S_IWUSR
    assert (folder / "use/list.txt").read_text().splitlines() == [
        "db/index",
        "db/index/empty",
        "db/index/lvl1",
        "db/index/lvl1/lvl2",
        "db/index/lvl1/lvl2/k.txt",
    ]


def test_temp_output_is_removed_after_use(workflow):
    folder = workflow(
        """
        rule all:
            input: "final/b.txt"

        rule a:
            output: temp("mid/a.txt")
            shell: "echo a > {output}"

        rule b:
            input: "mid/a.txt"
            output: "final/b.txt"
            shell: "cat {input} {input} > {output}"
        """
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    assert (folder / "final/b.txt").read_text() == "a\na\n"
    assert not (folder / "mid/a.txt").exists()


def test_modes_symlinks_and_nothing_to_do_afterwards(workflow):
    folder = workflow(
        """
        rule all:
            input: "o/hi.txt", "bin/latest"

        rule tool:
            output: exe="bin/run.sh", link="bin/latest"
            shell:
                "echo '#!/bin/sh' > {output.exe}; echo 'echo hi' >> {output.exe}; "
                "chmod 6755 {output.exe}; ln -s run.sh {output.link}"

        rule call:
            input: "bin/run.sh"
            output: "o/hi.txt"
            shell: "./{input} > {output}"
        """
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    exe = folder / "bin/run.sh"
    mode = stat.S_IMODE(exe.stat().st_mode)
    assert mode & 0o755 == 0o755
    assert not mode & (stat.S_ISUID | stat.S_ISGID)
    link = folder / "bin/latest"
    assert link.is_symlink() and os.readlink(link) == "run.sh"
    assert link.resolve() == exe.resolve()
    assert (folder / "o/hi.txt").read_text() == "hi\n"
    dry = run_snakemake(folder, "--dry-run")
    assert dry.returncode == 0, dry.output
    assert "Nothing to be done" in dry.output


def test_link_pointing_outside_the_workdir_is_refused(workflow):
    folder = workflow(
        """
        rule bad:
            output: "l/out"
            shell: "ln -s /etc/hostname {output}"
        """
    )

    run = run_snakemake(folder, "l/out")

    assert run.returncode != 0
    assert "unsafe path in archive: l/out (symlink to /etc/hostname)" in run.output
    assert not os.path.lexists(folder / "l/out")


def peak_rss_kib(folder, *args: str) -> tuple[int, SnakemakeRun]:
    """Run Snakemake, sampling its peak RSS (VmHWM) until it exits."""
    argv = [sys.executable, "-m", "snakemake", "--executor", "muse", "--jobs", "1"]
    argv += ["--seconds-between-status-checks", "1", "--directory", str(folder)]
    started = time.monotonic()
    with open(folder / "run.log", "w") as log:
        process = subprocess.Popen([*argv, *args], cwd=folder, stdout=log, stderr=log)
    peak = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            break
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    process.wait(timeout=300)
    seconds = time.monotonic() - started
    output = (folder / "run.log").read_text()
    return peak, SnakemakeRun(process.returncode, output, folder, seconds)


COPY_RULE = """
rule copy:
    input: "in/big.bin"
    output: "out/big.copy"
    shell: "cp {input} {output}"
"""


@pytest.mark.slow
def test_300_mib_input_is_streamed_both_ways(workflow, tmp_path_factory):
    size = 300 * 2**20
    small = workflow(COPY_RULE)
    (small / "in").mkdir()
    (small / "in/big.bin").write_bytes(os.urandom(2**20))
    baseline, run = peak_rss_kib(small, "out/big.copy")
    assert run.returncode == 0, run.output

    big = tmp_path_factory.mktemp("big")
    (big / "Snakefile").write_text(COPY_RULE)
    (big / "in").mkdir()
    with open(big / "in/big.bin", "wb") as handle:
        for _ in range(size // 2**20):
            handle.write(os.urandom(2**20))
    peak, run = peak_rss_kib(big, "out/big.copy")

    assert run.returncode == 0, run.output
    assert (big / "out/big.copy").stat().st_size == size
    growth_mib = (peak - baseline) / 1024
    print(
        f"plugin peak RSS: {baseline / 1024:.0f} MiB with a 1 MiB input, "
        f"{peak / 1024:.0f} MiB with a 300 MiB input (+{growth_mib:.0f} MiB)"
    )
    assert growth_mib < 50
    service_runs = big / ".snakemake/muse/service/runs"
    (run_folder,) = list(service_runs.iterdir())
    assert (run_folder / "in/big.bin").stat().st_size == size
