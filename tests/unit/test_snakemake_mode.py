"""The mode decision (shell or snakemake mode), snakemake-mode requests and the
job script of a group of shell rules, from real Snakemake jobs and groups."""

import contextlib
import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakemake_executor_muse.request import (
    RequestError,
    build_group_shell_request,
    build_snakemake_request,
    choose_group_software,
    choose_mode,
    choose_snakemake_software,
    declared_files,
    job_title,
    member_jobs,
    snakemake_reason,
    wrapper_hint,
)

KINDS = """
rule all:
    input: "o/shell.txt", "o/run.txt", "o/script.txt", "o/w.txt"
rule sh:
    output: "o/shell.txt"
    shell: "echo hi > {output}"
rule py:
    output: "o/run.txt"
    run:
        open(output[0], "w").write("x")
rule scr:
    output: "o/script.txt"
    script: "scripts/s.py"
rule wrapped:
    output: "o/w.txt"
    wrapper: "v5.0.0/bio/samtools/faidx"
"""

GROUPS = """
rule all:
    input: "out/all.txt", "m/b.txt", "p/out.txt"
rule a:
    input: "in/{s}.txt"
    output: temp("out/a.{s}.txt")
    log: "logs/a.{s}.log"
    group: "g"
    shell: "tr a-z A-Z < {input} > {output}; echo did a > {log}"
rule b:
    input: "out/a.{s}.txt"
    output: "out/b.{s}.txt"
    benchmark: "bench/b.{s}.tsv"
    group: "g"
    threads: 2
    resources: mem_mb=200, runtime=5
    shell: "cat {input} {input} > {output}"
rule agg:
    input: expand("out/b.{s}.txt", s=[1, 2])
    output: "out/all.txt"
    shell: "cat {input} > {output}"
rule ma:
    output: "m/a.txt"
    group: "mixed"
    shell: "echo a > {output}"
rule mb:
    input: "m/a.txt"
    output: "m/b.txt"
    group: "mixed"
    run:
        open(output[0], "w").write("b")
rule writer:
    output: pipe("p/fifo")
    shell: "echo piped > {output}"
rule reader:
    input: "p/fifo"
    output: "p/out.txt"
    shell: "cat {input} > {output}"
"""


@pytest.fixture
def kinds_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "wf"
    (folder / "scripts").mkdir(parents=True)
    (folder / "scripts" / "s.py").write_text("print(snakemake.output[0])\n")
    return folder


@pytest.fixture
def group_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "wf"
    (folder / "in").mkdir(parents=True)
    for sample in (1, 2):
        (folder / "in" / f"{sample}.txt").write_text(f"sample {sample}\n")
    return folder


@contextlib.contextmanager
def group_jobs(build_jobs, workdir: Path, snakefile: str) -> Iterator[dict]:
    """The group jobs of ``snakefile`` by group id (and wildcards), as Snakemake
    hands them to an executor: members known, topologically sorted."""
    from snakemake.settings.types import ExecutionSettings

    with build_jobs(workdir, snakefile) as jobs:
        dag = next(iter(jobs.values()))[0].dag
        dag.workflow.execution_settings = ExecutionSettings()
        dag.handle_pipes_and_services()
        dag.update_groups()
        groups: dict[str, list] = {}
        for job in dag.get_jobs_or_groups():
            if job.is_group():
                job.finalize()
                groups.setdefault(job.groupid, []).append(job)
        yield {"dag": dag, **groups}


def run_like_the_service(request, run_dir: Path, env=None):
    """What the service does: files in files_order, zips unzipped, cmd by bash."""
    run_dir.mkdir()
    by_name = {path.name: path for _name, path in request.files}
    for name in json.loads(request.fields["files_order"]):
        (run_dir / name).write_bytes(by_name[name].read_bytes())
        if name.endswith(".zip"):
            with zipfile.ZipFile(run_dir / name) as archive:
                archive.extractall(run_dir)
    return subprocess.run(
        request.fields["cmd"].split(),
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def test_auto_mode_follows_the_rule_kind(kinds_dir: Path, build_jobs):
    with build_jobs(kinds_dir, KINDS) as jobs:
        shell, run, script = jobs["sh"][0], jobs["py"][0], jobs["scr"][0]
        assert choose_mode(shell, "auto") == "shell"
        assert choose_mode(run, "auto") == "snakemake"
        assert choose_mode(script, "auto") == "snakemake"
        assert choose_mode(shell, "snakemake") == "snakemake"
        assert choose_mode(shell, "shell") == "shell"
        assert (
            snakemake_reason(run, "auto") == "is a run: rule and needs snakemake mode"
        )
        assert "--muse-mode snakemake" in snakemake_reason(shell, "snakemake")
        with pytest.raises(RequestError) as refused:
            choose_mode(script, "shell")
    message = str(refused.value)
    assert "Rule scr: rule scr is a script: rule" in message
    assert "--muse-mode auto" in message


def test_snakemake_software_configured_local_or_a_clear_error(
    kinds_dir: Path, build_jobs
):
    with build_jobs(kinds_dir, KINDS) as jobs:
        run = jobs["py"][0]
        assert choose_snakemake_software(run, "smk9", False, "auto") == "smk9"
        assert choose_snakemake_software(run, None, True, "auto") == "snakemake"
        with pytest.raises(RequestError) as refused:
            choose_snakemake_software(run, None, False, "auto")
    message = str(refused.value)
    assert message.startswith("Rule py is a run: rule and needs snakemake mode")
    assert "--muse-snakemake-software NAME" in message
    assert "localrules: py" in message
    assert "Snakemake 9.x" in message


def test_group_modes_and_pipe_groups(group_dir: Path, build_jobs):
    with group_jobs(build_jobs, group_dir, GROUPS) as groups:
        shell_group = groups["g"][0]
        mixed = groups["mixed"][0]
        others = [k for k in groups if k not in ("dag", "g", "mixed")]
        pipe_group = groups[others[0]][0]
        assert [m.rule.name for m in member_jobs(shell_group)] == ["a", "b"]
        assert choose_mode(shell_group, "auto") == "shell"
        assert choose_mode(mixed, "auto") == "snakemake"
        assert "contains the run: rule mb" in snakemake_reason(mixed, "auto")
        assert choose_mode(pipe_group, "auto") == "snakemake"
        with pytest.raises(RequestError, match="rule mb is a run: rule"):
            choose_mode(mixed, "shell")
        with pytest.raises(RequestError, match=r"pipe\(\) or service\(\) outputs"):
            choose_mode(pipe_group, "shell")
        assert job_title(shell_group).startswith("group job g (rules a, b; s=")
        outputs, logs, benchmark = declared_files(pipe_group)
        assert outputs == ["p/out.txt"] and logs == [] and benchmark is None


def test_group_shell_script_runs_members_in_order(
    group_dir: Path, build_jobs, tmp_path: Path
):
    with group_jobs(build_jobs, group_dir, GROUPS) as groups:
        group = next(g for g in groups["g"] if "in/1.txt" in g.input)
        unneeded = frozenset(
            str(f) for f in groups["dag"].get_unneeded_temp_files(group)
        )
        assert unneeded == {"out/a.1.txt"}
        software = choose_group_software(group, None, True)
        request = build_group_shell_request(
            group, software, ["Snakefile"], [], group_dir / ".up", unneeded
        )
        sbatch = json.loads(request.fields["sbatch_list"])
        with zipfile.ZipFile(request.files[0][1]) as archive:
            uploaded = set(archive.namelist())
        result = run_like_the_service(request, tmp_path / "run")
        request.cleanup()
    run = tmp_path / "run"
    assert software == "bash"
    assert "time=5" in sbatch and "cpus-per-task=2" in sbatch
    assert uploaded == {"in/1.txt", "Snakefile"}
    assert request.outputs == ["out/b.1.txt", "bench/b.1.tsv"]
    assert request.logs == ["logs/a.1.log"]
    assert result.returncode == 0, result.stderr
    assert (run / "out/b.1.txt").read_text() == "SAMPLE 1\nSAMPLE 1\n"
    assert (run / "logs/a.1.log").read_text() == "did a\n"
    assert (run / "bench/b.1.tsv").read_text().startswith("s\th:m:s\t")
    assert not (run / "out/a.1.txt").exists()
    manifest = (run / ".muse/manifest.tsv").read_text().splitlines()
    assert manifest == ["f\tout/b.1.txt", "f\tbench/b.1.tsv", "f\tlogs/a.1.log"]


def test_group_shell_script_stops_at_the_first_failure(
    group_dir: Path, build_jobs, tmp_path: Path
):
    failing = GROUPS.replace(
        'shell: "tr a-z A-Z < {input} > {output}; echo did a > {log}"',
        'shell: "echo half > {output}; exit 4"',
    )
    with group_jobs(build_jobs, group_dir, failing) as groups:
        group = next(g for g in groups["g"] if "in/2.txt" in g.input)
        request = build_group_shell_request(group, "bash", [], [], group_dir / ".up")
        result = run_like_the_service(request, tmp_path / "run")
        request.cleanup()
    run = tmp_path / "run"
    assert result.returncode == 4
    assert (run / ".muse/exit_code").read_text().strip() == "4"
    assert "muse: rule a (s=2) failed with exit code 4; the later jobs" in result.stderr
    assert not (run / "out/b.2.txt").exists()
    assert not (run / "bench/b.2.tsv").exists()
    assert "-\tout/b.2.txt" in (run / ".muse/manifest.tsv").read_text()


def test_group_rules_naming_two_softwares_are_refused(group_dir: Path, build_jobs):
    two = GROUPS.replace(
        "resources: mem_mb=200, runtime=5",
        'resources: mem_mb=200, runtime=5, muse_software="samtools"',
    )
    with (
        group_jobs(build_jobs, group_dir, two) as groups,
        pytest.raises(RequestError) as refused,
    ):
        choose_group_software(groups["g"][0], None, True)
    assert "different Muse softwares (bash, samtools)" in str(refused.value)


def fake_python(folder: Path, has_snakemake: bool) -> dict[str, str]:
    """An environment whose `python` does (or does not) find Snakemake."""
    folder.mkdir()
    code = 0 if has_snakemake else 1
    (folder / "python").write_text(f"#!/bin/sh\nexit {code}\n")
    (folder / "python").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def test_snakemake_script_runs_the_command_and_drops_remote_metadata(
    kinds_dir: Path, build_jobs, tmp_path: Path
):
    command = "mkdir -p .snakemake/metadata o && echo ran > o/run.txt"
    with build_jobs(kinds_dir, KINDS) as jobs:
        request = build_snakemake_request(
            jobs["py"][0], "smk", command, ["Snakefile"], [], kinds_dir / ".up"
        )
        env = fake_python(tmp_path / "bin", has_snakemake=True)
        result = run_like_the_service(request, tmp_path / "run", env)
        request.cleanup()
    run = tmp_path / "run"
    assert result.returncode == 0, result.stderr
    assert (run / "o/run.txt").read_text() == "ran\n"
    assert not (run / ".snakemake").exists()
    assert (run / ".muse/manifest.tsv").read_text() == "f\to/run.txt\n"
    assert json.loads(request.fields["files_order"]) == ["inputs.zip", "muse_job.sh"]


def test_snakemake_script_without_snakemake_says_what_to_set(
    kinds_dir: Path, build_jobs, tmp_path: Path
):
    with build_jobs(kinds_dir, KINDS) as jobs:
        request = build_snakemake_request(
            jobs["py"][0], "plainpy", "touch o/run.txt", [], [], kinds_dir / ".up"
        )
        env = fake_python(tmp_path / "bin", has_snakemake=False)
        result = run_like_the_service(request, tmp_path / "run", env)
        request.cleanup()
    assert result.returncode == 127
    assert "Muse software plainpy" in result.stderr
    assert "--muse-snakemake-software" in result.stderr
    assert (tmp_path / "run/.muse/exit_code").read_text().strip() == "127"


def test_wrapper_failure_hint_names_rule_network_and_prefix(
    kinds_dir: Path, build_jobs, tmp_path: Path
):
    with build_jobs(kinds_dir, KINDS) as jobs:
        job = jobs["wrapped"][0]
        hint = wrapper_hint(job, None)
        assert wrapper_hint(jobs["py"][0], None) == ""
        request = build_snakemake_request(
            job, "smk", "exit 1", [], [], kinds_dir / ".up", failure_hint=hint
        )
        env = fake_python(tmp_path / "bin", has_snakemake=True)
        result = run_like_the_service(request, tmp_path / "run", env)
        request.cleanup()
    assert "rule wrapped uses the wrapper v5.0.0/bio/samtools/faidx" in hint
    assert "https://github.com/snakemake/snakemake-wrappers/raw/" in hint
    assert "network" in hint and "--wrapper-prefix" in hint
    assert result.returncode == 1
    assert hint in result.stderr
