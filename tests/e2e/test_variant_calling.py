"""The example workflow through `snakemake --executor muse` on the embedded service.

The expected records were called from the samtools example data (NA18507) with
Debian 12's bwa 0.7.17, samtools 1.16.1 and bcftools 1.16, the same with the local
executor and through Muse: the plugin must not change what the tools compute.
"""

import shutil

import pytest
from muse_e2e import EXPECTED_SITES, REPO, SAMTOOLS_EXAMPLES, run_snakemake

WORKFLOW = REPO / "workflows" / "variant-calling"
TOOLS = ("bwa", "samtools", "bcftools")
missing = [tool for tool in TOOLS if shutil.which(tool) is None]
if not (SAMTOOLS_EXAMPLES / "ex1.sam.gz").exists():
    missing.append(f"{SAMTOOLS_EXAMPLES}/ex1.sam.gz")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}"),
]


def test_variant_calling_through_muse(tmp_path):
    for name in ("Snakefile", "config", "scripts"):
        source = WORKFLOW / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)

    run = run_snakemake(tmp_path, "--profile", str(REPO / "profiles" / "local"))

    assert run.returncode == 0, run.output[-4000:]
    vcf = (tmp_path / "results/calls.vcf").read_text().splitlines()
    header = [line for line in vcf if line.startswith("#CHROM")]
    assert header and header[0].split("\t")[9:] == ["B7", "EAS1", "EAS114"]
    records = [line.split("\t") for line in vcf if not line.startswith("#")]
    assert {(rec[0], int(rec[1])) for rec in records} == EXPECTED_SITES
    indels = [rec for rec in records if "INDEL" in rec[7]]
    assert [(rec[0], int(rec[1])) for rec in indels] == [("seq2", 784)]
    png = tmp_path / "results/plots/depth.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
