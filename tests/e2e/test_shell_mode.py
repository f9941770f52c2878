"""Shell-mode jobs through `snakemake --executor muse` on the embedded local service."""

import re
import stat

import pytest
from muse_e2e import run_snakemake

pytestmark = pytest.mark.e2e

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_chain_with_script_threads_and_logs(workflow):
    folder = workflow(
        """
        rule all:
            input: "out/c.txt"

        rule a:
            output: "out/a.txt"
            log: "logs/a.log"
            shell: "echo alpha > {output} 2> {log}"

        rule b:
            input: "out/a.txt"
            output: "out/b.txt"
            threads: 2
            shell: "python3 scripts/upper.py {input} {output} {threads}"

        rule c:
            input: "out/b.txt"
            output: "out/c.txt"
            shell: "cat {input} {input} > {output}"
        """,
        **{
            "scripts/upper.py": """
                import sys
                src, dst, threads = sys.argv[1:]
                with open(src) as fh, open(dst, "w") as out:
                    out.write(fh.read().upper().strip() + " " + threads + "\\n")
                """
        },
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    assert (folder / "out/c.txt").read_text() == "ALPHA 2\nALPHA 2\n"
    assert (folder / "logs/a.log").exists()
    assert "local Muse service" in run.output
    assert len(set(re.findall(UUID, run.output))) >= 3
    again = run_snakemake(folder, "--dry-run")
    assert again.returncode == 0, again.output
    assert "Nothing to be done" in again.output


def test_failing_rule_shows_stderr_and_key_and_leaves_nothing(workflow):
    folder = workflow(
        """
        rule half:
            output: "h/result.txt"
            log: "logs/half.log"
            shell: "echo partial > {output}; echo 'bad input line 7' >&2; exit 3"
        """
    )

    run = run_snakemake(folder, "h/result.txt")

    assert run.returncode != 0
    assert "bad input line 7" in run.output
    key = re.search(UUID, run.output)
    assert key, run.output
    assert not (folder / "h/result.txt").exists()
    saved = list((folder / ".snakemake/muse/logs").rglob("__WS__stderr.txt"))
    assert saved and "bad input line 7" in saved[0].read_text()
    dry = run_snakemake(folder, "--dry-run", "h/result.txt")
    assert "half" in dry.output


def test_executable_bit_survives_both_ways(workflow):
    folder = workflow(
        """
        rule all:
            input: "o/hi.txt"

        rule tool:
            output: "bin/run.sh"
            shell: "printf '#!/bin/sh\\necho hi\\n' > {output}; chmod 755 {output}"

        rule call:
            input: "bin/run.sh"
            output: "o/hi.txt"
            shell: "./{input} > {output}"
        """
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    mode = (folder / "bin/run.sh").stat().st_mode
    assert mode & stat.S_IXUSR
    assert (folder / "o/hi.txt").read_text() == "hi\n"


def test_input_outside_workdir_is_a_clear_error(workflow, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "data.txt"
    outside.write_text("x\n")
    folder = workflow(
        f"""
        rule copy:
            input: "{outside}"
            output: "c/copy.txt"
            shell: "cp {{input}} {{output}}"
        """
    )

    run = run_snakemake(folder, "c/copy.txt")

    assert run.returncode != 0
    assert str(outside) in run.output
    assert "outside" in run.output.lower()
    assert not (folder / "c/copy.txt").exists()


def test_unknown_software_with_a_local_catalog_says_what_to_set(workflow):
    folder = workflow(
        """
        rule a:
            output: "a.txt"
            resources: muse_software="nosuchtool"
            shell: "echo a > {output}"
        """,
        **{"catalog.yaml": "softwares:\n  bash:\n    run: host\n"},
    )

    run = run_snakemake(folder, "--muse-local-catalog", "catalog.yaml", "a.txt")

    assert run.returncode != 0
    assert "no software named 'nosuchtool'" in run.output
    assert "muse_software" in run.output
    assert "--muse-local-catalog" in run.output
    assert not (folder / "a.txt").exists()
