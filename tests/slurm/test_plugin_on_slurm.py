"""The plugin end to end on a real SLURM: ``snakemake --executor muse
--muse-local-backend slurm``, so the embedded service submits every job with sbatch.

What these tests look at is what SLURM itself says: the job's fields in
``scontrol show job`` (the SLURM job id is the state report's ``process.job_id``,
read back from the service's store once the run is over; a rule's job is the one
whose ``sbatch_list`` carries ``comment=<rule>[-<wildcard values>]``), its final
state, and the words of SLURM's own refusals as they reach Snakemake's error
message.
"""

import os
import shutil
import sqlite3
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from muse_e2e import EXPECTED_SITES, SAMTOOLS_EXAMPLES, SnakemakeRun, run_snakemake

from snakemake_executor_muse.service.app import report
from snakemake_executor_muse.service.store import JobRecord, Store

from .conftest import REPO, scontrol_job

pytestmark = pytest.mark.slurm

WORKFLOW = REPO / "workflows" / "variant-calling"
STORE_FILE = Path(".snakemake/muse/service/muse.sqlite3")


@dataclass
class Run(SnakemakeRun):
    """One finished ``snakemake`` run and what its service kept."""

    def records(self, rule: str) -> list[JobRecord]:
        """The service's records of a rule's jobs, oldest first."""
        path = self.workdir / STORE_FILE
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as database:
            keys = [row[0] for row in database.execute("SELECT key FROM jobs")]
        store = Store(path)
        try:
            found = [store.get_job(key) for key in keys]
        finally:
            store.close()
        mine = [
            record
            for record in found
            if record is not None and comment_rule(record) == rule
        ]
        return sorted(mine, key=lambda record: record.created)

    def record(self, rule: str) -> JobRecord:
        """The service's record of a rule's (last) job."""
        records = self.records(rule)
        assert records, f"rule {rule} never reached SLURM:\n{self.output[-3000:]}"
        return records[-1]

    def error_of(self, rule: str) -> str:
        """Snakemake's error report of a rule, up to its shell command."""
        _, marker, rest = self.output.partition(f"Error in rule {rule}:")
        assert marker, f"no error reported for rule {rule}:\n{self.output[-3000:]}"
        return rest.partition("    shell:")[0]

    def slurm_job_id(self, rule: str) -> str:
        """``process.job_id`` of the rule's state report."""
        return str(report(self.record(rule), "test")["process"]["job_id"])


def comment_rule(record: JobRecord) -> str:
    """The rule in the job's ``comment=<rule>[-<wildcards>]`` (rule names have no
    "-", so it is the part before the first one)."""
    for option in record.request.get("sbatch_list", []):
        if option.startswith("comment="):
            return option.removeprefix("comment=").partition("-")[0]
    return ""


def snakemake_on_slurm(workdir: Path, *args: str, timeout: float = 240) -> Run:
    """Run Snakemake in ``workdir`` with the embedded service on the SLURM backend."""
    # SLURM jobs inherit the service's environment: the venv's python comes first
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = run_snakemake(
        workdir,
        "--muse-local-backend",
        "slurm",
        *args,
        timeout=timeout,
        env={"PATH": path},
    )
    return Run(**vars(done))


def write_snakefile(workdir: Path, text: str) -> Path:
    (workdir / "Snakefile").write_text(textwrap.dedent(text))
    return workdir


def test_variant_calling_runs_on_slurm(slurm_cluster, tmp_path):
    tools = [tool for tool in ("bwa", "samtools", "bcftools") if not shutil.which(tool)]
    if tools or not (SAMTOOLS_EXAMPLES / "ex1.sam.gz").exists():
        pytest.skip(f"needs bwa, samtools, bcftools and {SAMTOOLS_EXAMPLES}")
    for name in ("Snakefile", "config", "scripts"):
        source = WORKFLOW / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)

    run = snakemake_on_slurm(tmp_path)

    assert run.returncode == 0, run.output[-4000:]
    vcf = (tmp_path / "results/calls.vcf").read_text().splitlines()
    records = [line.split("\t") for line in vcf if not line.startswith("#")]
    assert {(rec[0], int(rec[1])) for rec in records} == EXPECTED_SITES
    # every remote rule went through sbatch, and SLURM saw it complete
    for rule in ("bwa_mem", "call_variants", "plot_depth"):
        record = run.record(rule)
        assert (record.backend, record.state, record.exit_code) == (
            "slurm",
            "COMPLETED",
            0,
        )
        assert record.backend_id.isdigit()


def test_resources_reach_slurm_as_sbatch_options(slurm_cluster, tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "sized.txt", "per_cpu.txt"

        rule sized:
            output: "sized.txt"
            threads: 2
            resources:
                runtime=7,
                mem_mb=300,
                slurm_partition="short",
            shell: "echo $SLURM_CPUS_PER_TASK $SLURM_MEM_PER_NODE > {output}"

        rule per_cpu:
            output: "per_cpu.txt"
            resources:
                runtime="2h",
                mem_mb_per_cpu=500,
                slurm_extra="'--nice=10'",
            shell: "echo $SLURM_MEM_PER_CPU > {output}"
        """,
    )

    run = snakemake_on_slurm(tmp_path)

    assert run.returncode == 0, run.output[-4000:]
    assert "[time=7 mem=287M cpus-per-task=2 partition=short" in run.output
    sized = scontrol_job(run.slurm_job_id("sized"))
    assert sized["JobState"] == "COMPLETED"
    assert sized["TimeLimit"] == "00:07:00"
    assert sized["MinMemoryNode"] == "287M"
    assert sized["NumCPUs"] == "2"
    assert sized["Partition"] == "short"
    assert sized["Comment"] == "sized"
    # the job itself was given what was asked for
    assert (tmp_path / "sized.txt").read_text().split() == ["2", "287"]

    per_cpu = scontrol_job(run.slurm_job_id("per_cpu"))
    assert per_cpu["TimeLimit"] == "02:00:00"
    assert per_cpu["MinMemoryCPU"] == "477M"
    assert (per_cpu["NumCPUs"], per_cpu["Partition"]) == ("1", "debug")
    assert per_cpu["Nice"] == "10"
    assert (tmp_path / "per_cpu.txt").read_text().split() == ["477"]


@pytest.mark.slow
def test_time_limit_ends_as_timeout(slurm_cluster, tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule too_long:
            output: "never.txt"
            resources: runtime=1
            shell: "sleep 200; touch {output}"
        """,
    )

    run = snakemake_on_slurm(tmp_path)

    assert run.returncode != 0, run.output[-4000:]
    assert run.record("too_long").state == "TIMEOUT"
    fields = scontrol_job(run.slurm_job_id("too_long"))
    assert (fields["JobState"], fields["Reason"]) == ("TIMEOUT", "TimeLimit")
    error = run.error_of("too_long")
    assert "TIMEOUT: the job exceeded its time limit" in error, error
    assert not (tmp_path / "never.txt").exists()


def test_rejected_partition_fails_at_once_and_others_go_on(slurm_cluster, tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "rejected.txt", "fine.txt"

        rule rejected:
            output: "rejected.txt"
            resources: slurm_partition="nosuch"
            shell: "touch {output}"

        rule fine:
            output: "fine.txt"
            shell: "sleep 3; echo fine > {output}"
        """,
    )

    run = snakemake_on_slurm(tmp_path, "--keep-going", timeout=120)

    assert run.returncode != 0, run.output[-4000:]
    error = run.error_of("rejected")
    assert "sbatch: error: invalid partition specified: nosuch" in error, error
    assert (tmp_path / "fine.txt").read_text() == "fine\n"
    assert run.record("fine").state == "COMPLETED"
    # refused once, by sbatch, and not submitted again
    log = (tmp_path / ".snakemake/muse/service/service.log").read_text()
    assert log.count("sbatch refused") == 1, log[-3000:]
    assert run.records("rejected") == []
    assert run.seconds < 60


def test_envmodules_are_sent_and_fail_clearly_without_module(slurm_cluster, tmp_path):
    if shutil.which("modulecmd") or Path("/usr/share/modules/init/bash").exists():
        pytest.skip("environment modules are installed here; this test needs none")
    write_snakefile(
        tmp_path,
        """
        rule with_module:
            output: "tool.txt"
            envmodules: "toolA/1.2"
            shell: "echo ran > {output}"
        """,
    )

    run = snakemake_on_slurm(tmp_path, "--use-envmodules")

    assert run.returncode != 0, run.output[-4000:]
    record = run.record("with_module")
    assert record.request["module_list"] == ["toolA/1.2"]
    assert record.state == "FAILED"
    stderr = (record.run_path / "__WS__stderr.txt").read_text()
    expected = (
        "muse: this job asks for the modules toolA/1.2, but the 'module' command "
        "is not available on this host"
    )
    assert expected in stderr
    assert expected in run.error_of("with_module")
    assert not (tmp_path / "tool.txt").exists()
