"""`run:`, `script:`, `notebook:` and `wrapper:` rules, and `--muse-mode`, through
`snakemake --executor muse` on the local service (snakemake mode).

The notebook test needs nbconvert and a Jupyter kernel in the service's Python
environment (the `test` extra installs them) and skips, with that reason, without.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
from muse_e2e import run_snakemake

from snakemake_executor_muse import embedded

pytestmark = pytest.mark.e2e


def assert_nothing_left_to_do(folder, *args):
    again = run_snakemake(folder, "--dry-run", *args)
    assert again.returncode == 0, again.output
    assert "Nothing to be done" in again.output


def test_run_and_script_rules_see_the_snakemake_object(workflow):
    folder = workflow(
        """
        rule all:
            input: "out/run.s1.txt", "out/script.txt"

        rule py:
            input: "in/data.txt"
            output: "out/run.{sample}.txt"
            log: "logs/py.{sample}.log"
            params: greeting=config["greeting"]
            threads: 2
            resources: mem_mb=50
            run:
                with open(input[0]) as fh:
                    data = fh.read().strip()
                with open(output[0], "w") as fh:
                    fh.write(
                        f"{params.greeting} {wildcards.sample} {threads} "
                        f"{resources.mem_mb} {rule} {data}\\n"
                    )
                with open(log[0], "w") as fh:
                    fh.write("logged\\n")

        rule scr:
            input: first="in/data.txt"
            output: "out/script.txt"
            params: factor=3
            script: "scripts/write_it.py"
        """,
        **{
            "in/data.txt": "payload\n",
            "settings/run.yaml": "greeting: hello\n",
            "scripts/write_it.py": """
                with open(snakemake.input.first) as fh:
                    text = fh.read().strip()
                with open(snakemake.output[0], "w") as out:
                    out.write(f"{text} | {snakemake.params.factor} {snakemake.rule}\\n")
                """,
        },
    )

    run = run_snakemake(folder, "--configfile", "settings/run.yaml")

    assert run.returncode == 0, run.output
    assert (folder / "out/run.s1.txt").read_text() == "hello s1 2 50 py payload\n"
    assert (folder / "logs/py.s1.log").read_text() == "logged\n"
    assert (folder / "out/script.txt").read_text() == "payload | 3 scr\n"
    assert run.output.count("to snakemake (snakemake mode)") == 2
    assert_nothing_left_to_do(folder, "--configfile", "settings/run.yaml")


def test_muse_mode_snakemake_runs_a_shell_rule_with_benchmark(workflow):
    folder = workflow(
        """
        rule sh:
            output: "o/sh.txt"
            log: "logs/sh.log"
            benchmark: "bench/sh.tsv"
            shell: "echo via snakemake > {output}; echo done > {log}"
        """
    )

    run = run_snakemake(folder, "--muse-mode", "snakemake", "o/sh.txt")

    assert run.returncode == 0, run.output
    assert "(snakemake mode)" in run.output
    assert (folder / "o/sh.txt").read_text() == "via snakemake\n"
    assert (folder / "logs/sh.log").read_text() == "done\n"
    assert (folder / "bench/sh.tsv").read_text().startswith("s\th:m:s")
    assert not list(folder.glob(".snakemake/muse/service/runs/*/.snakemake"))
    assert_nothing_left_to_do(folder, "o/sh.txt")


def test_muse_mode_shell_refuses_a_run_rule(workflow):
    folder = workflow(
        """
        rule py:
            output: "o/py.txt"
            run:
                open(output[0], "w").write("x")
        """
    )

    run = run_snakemake(folder, "--muse-mode", "shell", "o/py.txt")

    assert run.returncode != 0
    assert "Rule py: rule py is a run: rule, which shell mode" in run.output
    assert "Traceback" not in run.output
    assert not (folder / "o/py.txt").exists()


def test_wrapper_without_network_fails_naming_rule_and_remedy(workflow):
    folder = workflow(
        """
        rule faidx:
            input: "ref/genome.fa"
            output: "ref/genome.fa.fai"
            wrapper: "v5.0.0/bio/samtools/faidx"
        """,
        **{"ref/genome.fa": ">chr1\nACGT\n"},
    )

    run = run_snakemake(folder, "ref/genome.fa.fai")

    assert run.returncode != 0
    assert "rule faidx uses the wrapper v5.0.0/bio/samtools/faidx" in run.output
    assert "the cluster needs network access" in run.output
    assert "--wrapper-prefix" in run.output
    assert not (folder / "ref/genome.fa.fai").exists()


def test_real_url_without_snakemake_software_fails_at_submission(
    workflow, tmp_path_factory
):
    folder = workflow(
        """
        rule all:
            input: "o/py.txt", "o/sh.txt"

        rule py:
            output: "o/py.txt"
            run:
                open(output[0], "w").write("x")

        rule sh:
            output: "o/sh.txt"
            shell: "echo sh > {output}"
        """
    )
    service = embedded.start(tmp_path_factory.mktemp("service"), None)
    try:
        run = run_snakemake(
            folder,
            "--keep-going",
            "--muse-url",
            service.url,
            "--muse-software",
            "bash",
            env={
                "SNAKEMAKE_MUSE_USERNAME": service.username,
                "SNAKEMAKE_MUSE_PASSWORD": service.password,
            },
        )
    finally:
        service.stop()

    assert run.returncode != 0
    assert "Rule py is a run: rule and needs snakemake mode" in run.output
    assert "set --muse-snakemake-software NAME" in run.output
    assert "Traceback" not in run.output
    assert (folder / "o/sh.txt").read_text() == "sh\n"
    assert not (folder / "o/py.txt").exists()


def notebook(*cells: str) -> str:
    """A minimal nbformat-4 notebook with one code cell per source text."""
    return json.dumps(
        {
            "cells": [
                {
                    "id": f"cell{number}",
                    "cell_type": "code",
                    "metadata": {},
                    "execution_count": None,
                    "outputs": [],
                    "source": source,
                }
                for number, source in enumerate(cells)
            ],
            "metadata": {
                "kernelspec": {
                    "name": "python3",
                    "display_name": "Python 3",
                    "language": "python",
                },
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


@pytest.mark.skipif(
    shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None,
    reason="needs jupyter (nbconvert, ipykernel) beside this Python: "
    "pip install -e '.[test]'",
)
def test_notebook_rule_runs_with_the_snakemake_object(workflow):
    folder = workflow(
        """
        rule nb:
            input: "in/data.txt"
            output: "out/nb.txt"
            params: factor=7
            log: notebook="logs/nb.ipynb"
            notebook: "notebooks/write.py.ipynb"
        """,
        **{
            "in/data.txt": "from-input\n",
            "notebooks/write.py.ipynb": notebook(
                "text = open(snakemake.input[0]).read().strip()",
                "with open(snakemake.output[0], 'w') as out:\n"
                "    out.write(f'{text} {snakemake.params.factor}\\n')",
            ),
        },
    )

    run = run_snakemake(folder, "out/nb.txt")

    assert run.returncode == 0, run.output[-3000:]
    assert "snakemake mode" in run.output
    assert (folder / "out/nb.txt").read_text() == "from-input 7\n"
    executed = json.loads((folder / "logs/nb.ipynb").read_text())
    assert executed["cells"][0]["source"]
    assert_nothing_left_to_do(folder, "out/nb.txt")
