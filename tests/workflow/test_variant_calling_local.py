"""The example workflow workflows/variant-calling on the samtools example data.

Runs it with Snakemake's local executor in a copy of the workflow folder, so that
a broken Snakefile, script or data path shows up here rather than inside a Muse
job. Needs bwa, samtools, bcftools and the Debian samtools example data.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "variant-calling"
DATA_DIR = Path("/usr/share/doc/samtools/examples")
TOOLS = ("bwa", "samtools", "bcftools")

missing = [tool for tool in TOOLS if shutil.which(tool) is None]
if not (DATA_DIR / "ex1.sam.gz").exists():
    missing.append(f"{DATA_DIR}/ex1.sam.gz (Debian package samtools)")
pytestmark = pytest.mark.skipif(
    bool(missing),
    reason=f"needs {', '.join(missing)}; install: apt-get install {' '.join(TOOLS)}",
)


def copy_workflow(target: Path) -> Path:
    for name in ("Snakefile", "config", "scripts"):
        source = WORKFLOW / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            shutil.copy(source, target / name)
    return target


def environment() -> dict[str, str]:
    """PATH with this interpreter first: the plot rule calls `python`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "-d", str(workdir)]
    command += ["-s", str(workdir / "Snakefile"), *args]
    return subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=300
    )


def variant_records(vcf: Path) -> list[list[str]]:
    lines = vcf.read_text().splitlines()
    return [line.split("\t") for line in lines if not line.startswith("#")]


def test_local_run_calls_variants_in_every_sample(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)

    result = snakemake(workdir)

    assert result.returncode == 0, result.stderr[-3000:]
    split_log = (workdir / "results/logs/split_reads.log").read_text()
    assert "B7: 467 reads" in split_log
    assert "EAS1: 505 reads" in split_log
    assert "EAS114: 534 reads" in split_log
    vcf = workdir / "results/calls.vcf"
    header = [line for line in vcf.read_text().splitlines() if line.startswith("#C")]
    assert header[0].split("\t")[9:] == ["B7", "EAS1", "EAS114"]
    records = variant_records(vcf)
    assert len(records) >= 3
    assert {record[0] for record in records} == {"seq1", "seq2"}
    png = (workdir / "results/plots/depth.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_unknown_sample_fails_with_a_message(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)

    result = snakemake(
        workdir, "--config", "samples=[B7,NOSUCH]", "--", "resources/reads/B7.sam"
    )

    assert result.returncode != 0
    log = (workdir / "results/logs/split_reads.log").read_text()
    assert "sample NOSUCH: no read name in" in log
    assert "samples: in config/config.yaml" in log


def test_plot_rejects_a_wrong_number_of_sample_labels(tmp_path: Path) -> None:
    depth = tmp_path / "depth.tsv"
    depth.write_text("#CHROM\tPOS\ta.bam\tb.bam\nseq1\t1\t3\t4\n")
    vcf = tmp_path / "calls.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n")
    script = WORKFLOW / "scripts" / "plot_depth.py"

    result = subprocess.run(
        [sys.executable, str(script), "--depth", str(depth), "--vcf", str(vcf)]
        + ["--samples", "only_one", "--output", str(tmp_path / "out.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "2 depth columns but 1 samples given" in result.stderr
    assert not (tmp_path / "out.png").exists()
