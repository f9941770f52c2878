"""Shell-mode requests from real Snakemake jobs, and the job script run by bash."""

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from snakemake_executor_muse.request import (
    RequestError,
    build_shell_request,
    choose_software,
    module_list,
    required_mode,
    usable_sources,
    wildcards_folder,
)

SNAKEFILE = """
rule all:
    input: "out/a.txt", "out/b.txt"
rule a:
    input: "in/data.txt", "in/db"
    output: "out/a.txt"
    log: "logs/a.log"
    benchmark: "bench/a.tsv"
    threads: 2
    resources: runtime=10, mem_mb=500, muse_software="tools"
    shell:
        "mkdir -p {resources.tmpdir}/x && cat {input[0]} > {output} "
        "&& echo done > {log}"
rule b:
    output: "out/b.txt"
    run:
        open(output[0], "w").write("x")
"""


def run_like_the_service(request, run_dir: Path) -> subprocess.CompletedProcess:
    """What the service does: files in files_order, zips unzipped, cmd by bash."""
    run_dir.mkdir()
    for name in json.loads(request.fields["files_order"]):
        source = dict((p.name, p) for _n, p in request.files)[name]
        (run_dir / name).write_bytes(source.read_bytes())
        if name.endswith(".zip"):
            with zipfile.ZipFile(run_dir / name) as archive:
                archive.extractall(run_dir)
    return subprocess.run(
        request.fields["cmd"].split(), cwd=run_dir, capture_output=True, timeout=30
    )


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "wf"
    (folder / "in" / "db" / "empty").mkdir(parents=True)
    (folder / "in" / "data.txt").write_text("data\n")
    (folder / "scripts").mkdir()
    (folder / "scripts" / "tool.py").write_text("print(1)\n")
    return folder


def test_shell_request_fields_files_and_script_run(workflow_dir: Path, build_jobs):
    with build_jobs(workflow_dir, SNAKEFILE) as jobs:
        job = jobs["a"][0]
        assert required_mode(job) == "shell"
        assert required_mode(jobs["b"][0]) == "run"
        software = choose_software(job, None, False)
        assert software == "tools"
        sources, _ = usable_sources(["Snakefile", "scripts/tool.py"], workflow_dir)
        request = build_shell_request(
            job, software, sources, ["samtools/1.17"], workflow_dir / ".up"
        )
        fields = request.fields
        assert fields["cmd"] == "bash muse_job.sh"
        assert json.loads(fields["files_order"]) == ["inputs.zip", "muse_job.sh"]
        assert fields["returned_type"] == "run.zip"
        assert fields["todownload"] == "no"
        assert json.loads(fields["sbatch_list"]) == [
            "time=10",
            "mem=477M",
            "cpus-per-task=2",
            "comment=a",
        ]
        assert json.loads(fields["module_list"]) == ["samtools/1.17"]
        with zipfile.ZipFile(request.files[0][1]) as archive:
            names = set(archive.namelist())
        assert {"in/data.txt", "in/db/", "in/db/empty/", "Snakefile"} <= names
        assert "scripts/tool.py" in names
        script = request.files[1][1].read_text()
        assert "<TBD>" not in script and "$MUSE_TMPDIR/x" in script
        result = run_like_the_service(request, workflow_dir.parent / "run")
        request.cleanup()
    run = workflow_dir.parent / "run"
    assert result.returncode == 0, result.stderr
    assert (run / "out/a.txt").read_text() == "data\n"
    assert (run / ".muse/exit_code").read_text().strip() == "0"
    manifest = (run / ".muse/manifest.tsv").read_text().splitlines()
    assert manifest == ["f\tout/a.txt", "f\tlogs/a.log", "f\tbench/a.tsv"]
    header, row = (run / "bench/a.tsv").read_text().splitlines()
    assert header.split("\t")[:3] == ["s", "h:m:s", "max_rss"]
    seconds, hms, *rest = row.split("\t")
    assert float(seconds) >= 0 and hms.count(":") == 2 and set(rest) == {"NA"}
    assert not (run / ".muse/tmp").exists()
    assert not request.folder.exists()


def test_failing_command_records_exit_code_and_missing(tmp_path: Path, build_jobs):
    text = (
        'rule h:\n    output: "h/result.txt"\n'
        '    shell: "echo partial > {output}; false; echo no"\n'
    )
    with build_jobs(tmp_path, text) as jobs:
        request = build_shell_request(jobs["h"][0], "bash", [], [], tmp_path / "up")
        result = run_like_the_service(request, tmp_path / "run")
    assert result.returncode == 1
    assert (tmp_path / "run/.muse/exit_code").read_text().strip() == "1"


def test_input_outside_workdir_fails_before_upload(tmp_path: Path, build_jobs):
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    folder = tmp_path / "wf"
    folder.mkdir()
    text = (
        f'rule o:\n    input: "{outside}"\n    output: "o.txt"\n'
        '    shell: "cp {input} {output}"\n'
    )
    with (
        build_jobs(folder, text) as jobs,
        pytest.raises(Exception, match="outside the working directory"),
    ):
        build_shell_request(jobs["o"][0], "bash", [], [], folder / "up")
    assert not (folder / "up").exists() or not any((folder / "up").iterdir())


def test_no_software_anywhere_is_a_clear_error(tmp_path: Path, build_jobs):
    text = 'rule s:\n    output: "s.txt"\n    shell: "touch {output}"\n'
    with build_jobs(tmp_path, text) as jobs:
        with pytest.raises(RequestError, match="muse_software.*--muse-software"):
            choose_software(jobs["s"][0], None, False)
        assert choose_software(jobs["s"][0], None, True) == "bash"
        assert choose_software(jobs["s"][0], "tools", False) == "tools"


def test_wildcards_folder_has_no_slash():
    assert wildcards_folder({"stem": "results/run1/s01"}) == "stem-results_run1_s01"
    assert wildcards_folder({}) == "no_wildcards"


ENVMODULES_SNAKEFILE = """
rule mod:
    output: "x/mod.txt"
    envmodules: "toolA/1.2", "toolB/3.4"
    shell: "echo loaded > {output}"
"""


def test_envmodules_become_module_list_in_order_only_with_the_flag(
    workflow_dir: Path, build_jobs
):
    with build_jobs(workflow_dir, ENVMODULES_SNAKEFILE) as jobs:
        job = jobs["mod"][0]
        assert module_list(job, use_envmodules=True) == ["toolA/1.2", "toolB/3.4"]
        assert module_list(job, use_envmodules=False) == []
