"""Group jobs through `snakemake --executor muse` on the local service: one Muse
job per group, shell mode for groups of shell rules, snakemake mode otherwise."""

import re

import pytest
from muse_e2e import run_snakemake

pytestmark = pytest.mark.e2e

GROUP_SUBMISSION = re.compile(
    r"Muse: group job (\S+) \(rules ([^;)]+)(?:; ([^)]*))?\) submitted as key "
    r"(\S+) to (\S+) \((\w+) mode\)"
)


def submissions(output: str) -> list[tuple[str, ...]]:
    return GROUP_SUBMISSION.findall(output)


def assert_nothing_left_to_do(folder):
    again = run_snakemake(folder, "--dry-run")
    assert again.returncode == 0, again.output
    assert "Nothing to be done" in again.output


def test_shell_group_fanned_out_into_an_aggregate(workflow):
    folder = workflow(
        """
        rule all:
            input: "out/all.txt"

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
            shell: "cat {input} {input} > {output}"

        rule agg:
            input: expand("out/b.{s}.txt", s=[1, 2, 3])
            output: "out/all.txt"
            shell: "cat {input} > {output}"
        """,
        **{f"in/{s}.txt": f"sample {s}\n" for s in (1, 2, 3)},
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    groups = submissions(run.output)
    assert len(groups) == 3, run.output
    assert {(g[0], g[1], g[5]) for g in groups} == {("g", "a, b", "shell")}
    assert sorted(g[2] for g in groups) == ["s=1", "s=2", "s=3"]
    assert (folder / "out/all.txt").read_text() == "".join(
        f"SAMPLE {s}\nSAMPLE {s}\n" for s in (1, 2, 3)
    )
    for s in (1, 2, 3):
        assert (folder / f"logs/a.{s}.log").read_text() == "did a\n"
        assert (folder / f"bench/b.{s}.tsv").read_text().startswith("s\th:m:s")
        assert not (folder / f"out/a.{s}.txt").exists()
    assert_nothing_left_to_do(folder)


def test_group_with_a_run_rule_runs_in_snakemake_mode(workflow):
    folder = workflow(
        """
        rule all:
            input: "out/b.txt"

        rule a:
            output: "out/a.txt"
            group: "mixed"
            shell: "echo from shell > {output}"

        rule b:
            input: "out/a.txt"
            output: "out/b.txt"
            log: "logs/b.log"
            group: "mixed"
            run:
                text = open(input[0]).read().strip()
                open(output[0], "w").write(f"{text} then {rule}\\n")
                open(log[0], "w").write("b ran\\n")
        """
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    groups = submissions(run.output)
    assert [(g[0], g[1], g[4], g[5]) for g in groups] == [
        ("mixed", "a, b", "snakemake", "snakemake")
    ]
    assert (folder / "out/a.txt").read_text() == "from shell\n"
    assert (folder / "out/b.txt").read_text() == "from shell then b\n"
    assert (folder / "logs/b.log").read_text() == "b ran\n"
    assert_nothing_left_to_do(folder)


def test_shell_group_stops_at_the_first_failing_rule(workflow):
    folder = workflow(
        """
        rule all:
            input: "out/b.txt"

        rule a:
            output: "out/a.txt"
            log: "logs/a.log"
            group: "g"
            shell: "echo half > {output}; echo 'a broke' >&2; exit 4"

        rule b:
            input: "out/a.txt"
            output: "out/b.txt"
            group: "g"
            shell: "cp {input} {output}"
        """
    )

    run = run_snakemake(folder)

    assert run.returncode != 0
    assert "a broke" in run.output
    assert "muse: rule a failed with exit code 4; the later jobs" in run.output
    assert not (folder / "out/a.txt").exists()
    assert not (folder / "out/b.txt").exists()


def test_pipe_group_runs_in_snakemake_mode(workflow):
    folder = workflow(
        """
        rule all:
            input: "p/out.txt"

        rule writer:
            output: pipe("p/fifo")
            shell: "printf 'one\\ntwo\\n' > {output}"

        rule reader:
            input: "p/fifo"
            output: "p/out.txt"
            shell: "wc -l < {input} > {output}"
        """
    )

    run = run_snakemake(folder)

    assert run.returncode == 0, run.output
    groups = submissions(run.output)
    assert [(g[1], g[5]) for g in groups] == [("reader, writer", "snakemake")]
    assert (folder / "p/out.txt").read_text().strip() == "2"
    assert not (folder / "p/fifo").exists()
    assert_nothing_left_to_do(folder)
