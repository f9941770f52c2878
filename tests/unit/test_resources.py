"""sbatch_list from real Snakemake 9 jobs: field cases K1 to K5, and the errors.

Findings from real Snakemake 9.27.1, asserted below:
- ``runtime="00:30:00"`` in a rule is refused by Snakemake itself when the
  Snakefile is read ("could not be parsed as minutes"), so it never reaches the
  plugin; the clock form is still converted exactly by ``runtime_minutes``.
- ``mem="10G"`` becomes ``mem_mb=10000`` and ``mem_mib=9537`` and beats a
  ``--default-resources mem_mb=1000``; ``mem_gib`` is not a Snakemake name, so the
  job carries both ``mem_gib=2`` and the default ``mem_mb=1000``.
"""

from pathlib import Path

import pytest

from snakemake_executor_muse.request import required_mode, wildcards_of
from snakemake_executor_muse.resources import (
    ResourceError,
    build_sbatch_list,
    parse_slurm_extra,
    runtime_minutes,
)


def sbatch_of(job) -> list[str]:
    plan = build_sbatch_list(
        job.rule.name, dict(job.resources.items()), job.threads, wildcards_of(job)
    )
    return plan.options


K1 = """
rule all:
    input: "t/a.txt", "t/b.txt", "t/d.txt"
rule plain:
    output: "t/a.txt"
    resources: runtime=45
    shell: "echo a > {output}"
rule hours:
    output: "t/b.txt"
    resources: runtime="2h"
    shell: "echo b > {output}"
rule viaprofile:
    output: "t/d.txt"
    shell: "echo d > {output}"
"""


def test_k1_runtime_minutes_from_rule_and_set_resources(tmp_path: Path, build_jobs):
    with build_jobs(tmp_path, K1, set_resources=["viaprofile:runtime=90"]) as jobs:
        assert sbatch_of(jobs["plain"][0]) == [
            "time=45",
            "cpus-per-task=1",
            "comment=plain",
        ]
        assert sbatch_of(jobs["hours"][0])[0] == "time=120"
        assert sbatch_of(jobs["viaprofile"][0])[0] == "time=90"


def test_k1_clock_runtime_is_refused_by_snakemake_before_upload(
    tmp_path: Path, build_jobs
):
    from snakemake_interface_common.exceptions import WorkflowError

    text = (
        'rule c:\n    output: "c"\n    resources: runtime="00:30:00"\n    shell: "x"\n'
    )
    with pytest.raises(WorkflowError, match="runtime"), build_jobs(tmp_path, text):
        pass


@pytest.mark.parametrize(
    ("value", "minutes"),
    [
        (45, 45),
        ("45", 45),
        ("90m", 90),
        ("2h", 120),
        ("1d", 1440),
        ("00:30:00", 30),
        ("1-02:00:00", 1560),
        ("30:00", 30),
        ("2-01:30", 2970),
    ],
)
def test_runtime_forms(value, minutes):
    assert runtime_minutes("r", value) == minutes


@pytest.mark.parametrize("value", ["00:00:30", "1h30x", "soon", "90s"])
def test_runtime_unusable_values_name_rule_and_resource(value):
    with pytest.raises(ResourceError, match=r"Rule r: resource runtime="):
        runtime_minutes("r", value)


def test_runtime_under_one_minute_warns_and_sends_one():
    plan = build_sbatch_list("r", {"runtime": 0}, 1, {})
    assert plan.options[0] == "time=1"
    assert "under one minute" in plan.warnings[0]


@pytest.mark.parametrize("value", [-5, "-5"])
def test_negative_runtime_is_refused_before_upload(value):
    with pytest.raises(ResourceError, match=r"Rule r: resource runtime=.*expected"):
        build_sbatch_list("r", {"runtime": value}, 1, {})


K2 = """
rule all:
    input: "m/big.txt", "m/gib.txt", "m/mib.txt", "m/none.txt"
rule big:
    output: "m/big.txt"
    resources: mem="10G"
    shell: "echo 1 > {output}"
rule gib:
    output: "m/gib.txt"
    resources: mem_gib=2
    shell: "echo 2 > {output}"
rule mib:
    output: "m/mib.txt"
    resources: mem_mib=3000
    shell: "echo 3 > {output}"
rule none:
    output: "m/none.txt"
    shell: "echo 4 > {output}"
"""


def test_k2_memory_rule_beats_default_and_units_are_mib(tmp_path: Path, build_jobs):
    with build_jobs(tmp_path, K2, default_resources=["mem_mb=1000"]) as jobs:
        big = jobs["big"][0]
        assert big.resources["mem_mb"] == 10000
        assert "mem=9537M" in sbatch_of(big)
        assert "mem=2048M" in sbatch_of(jobs["gib"][0])
        assert "mem=3000M" in sbatch_of(jobs["mib"][0])
        # 1000 MB = 953.67 MiB, rounded up (Snakemake's own mem_mib agrees)
        assert "mem=954M" in sbatch_of(jobs["none"][0])


def test_memory_like_unknown_key_warns_with_its_name():
    plan = build_sbatch_list("r", {"memory_gb": 4, "mem_mb": 100}, 1, {})
    assert "mem=96M" in plan.options
    assert any("'memory_gb'" in warning for warning in plan.warnings)


def test_mem_per_cpu_and_string_sizes():
    assert (
        "mem-per-cpu=954M"
        in build_sbatch_list(
            "r", {"mem_mb_per_cpu": 1000, "mem_mb": 5000}, 2, {}
        ).options
    )
    assert "mem=8192M" in build_sbatch_list("r", {"mem": "8GiB"}, 1, {}).options
    assert "mem=9537M" in build_sbatch_list("r", {"mem": "10G"}, 1, {}).options


def test_unusable_memory_names_rule_resource_value():
    with pytest.raises(ResourceError, match=r"Rule big: resource mem='lots'"):
        build_sbatch_list("big", {"mem": "lots"}, 1, {})


K3 = """
rule many:
    output: "c/many.txt"
    threads: 32
    shell: "echo {threads} > {output}"
"""


def test_k3_threads_are_cpus_per_task_not_capped_locally(tmp_path: Path, build_jobs):
    with build_jobs(tmp_path, K3) as jobs:
        job = jobs["many"][0]
        assert job.shellcmd == "echo 32 > c/many.txt"
        options = sbatch_of(job)
        assert "cpus-per-task=32" in options
        assert not any(o.startswith("ntasks") for o in options)


K4 = """
rule gpu_rule:
    output: "g/out.txt"
    shell: "echo ok > {output}"
"""
K4_RULE = """
rule gpu_rule:
    output: "g/out.txt"
    resources: slurm_extra="--qos=fast --gres=gpu:1"
    shell: "echo ok > {output}"
"""


def test_k4_extra_quotes_partition_and_no_account(tmp_path: Path, build_jobs):
    profile = tmp_path / "profile"
    rule = tmp_path / "rule"
    profile.mkdir()
    rule.mkdir()
    with build_jobs(
        profile,
        K4,
        default_resources=['slurm_partition="short"'],
        set_resources=["gpu_rule:slurm_extra=\"'--qos=fast --gres=gpu:1'\""],
    ) as jobs:
        from_profile = sbatch_of(jobs["gpu_rule"][0])
    with build_jobs(
        rule, K4_RULE, default_resources=['slurm_partition="short"']
    ) as jobs:
        from_rule = sbatch_of(jobs["gpu_rule"][0])
    assert from_profile == from_rule
    assert "partition=short" in from_rule
    assert "qos=fast" in from_rule
    assert "gres=gpu:1" in from_rule
    assert not any(o.startswith("account") for o in from_rule)
    assert not any("'" in o or "None" in o or "null" in o for o in from_rule)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("'-G 2'", [("gpus", "2")]),
        ('"--qos=fast --exclusive"', [("qos", "fast"), ("exclusive", None)]),
        ("--time 10 -p long", [("time", "10"), ("partition", "long")]),
    ],
)
def test_slurm_extra_forms(raw, expected):
    assert parse_slurm_extra("r", raw) == expected


@pytest.mark.parametrize(
    "raw", ["--chdir=/tmp", "-o out.txt", "--job-name=x", "--array=1-3", "--export=ALL"]
)
def test_slurm_extra_refuses_options_the_service_owns(raw):
    with pytest.raises(ResourceError, match="sets it itself"):
        build_sbatch_list("r", {"slurm_extra": raw}, 1, {})


def test_slurm_extra_duplicate_of_a_resource_is_refused():
    with pytest.raises(ResourceError, match="already set"):
        build_sbatch_list("r", {"runtime": 5, "slurm_extra": "--time=10"}, 1, {})


def test_gpus_gres_tasks_and_placement():
    plan = build_sbatch_list(
        "r",
        {
            "gpu": 2,
            "gpu_model": "a100",
            "gres": "gpu:a100:2",
            "nodes": 1,
            "tasks": 4,
            "tasks_per_node": 4,
            "slurm_account": "lab",
            "qos": "normal",
            "constraint": "avx2",
            "cpus_per_task": 8,
        },
        2,
        {},
    )
    assert plan.options == [
        "cpus-per-task=8",
        "account=lab",
        "qos=normal",
        "constraint=avx2",
        "gpus=a100:2",
        "gres=gpu:a100:2",
        "nodes=1",
        "ntasks=4",
        "ntasks-per-node=4",
        "comment=r",
    ]


def test_bad_gres_is_refused():
    with pytest.raises(ResourceError, match="gres"):
        build_sbatch_list("r", {"gres": "gpu 2"}, 1, {})


K5 = """
rule index:
    input: "{stem}.gz"
    output: "{stem}.gz.idx"
    shell: "wc -c < {input} > {output}"
"""


def test_k5_comment_has_no_slash_and_is_capped(tmp_path: Path, build_jobs):
    (tmp_path / "results" / "run1").mkdir(parents=True)
    (tmp_path / "results" / "run1" / "s01.gz").write_text("x")
    text = 'rule all:\n    input: "results/run1/s01.gz.idx"\n' + K5
    with build_jobs(tmp_path, text) as jobs:
        job = jobs["index"][0]
        assert job.output[0] == "results/run1/s01.gz.idx"
        assert required_mode(job) == "shell"
        assert sbatch_of(job)[-1] == "comment=index-results_run1_s01"
    long = build_sbatch_list("r", {}, 1, {"w": "a/" * 100})
    assert len(long.options[-1]) <= len("comment=") + 80
    assert "/" not in long.options[-1]
