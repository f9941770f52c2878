"""Snakemake resources -> the Muse ``sbatch_list`` (``"option=value"`` strings).

Resource names are those of snakemake-executor-plugin-slurm, so that a SLURM
profile moves to Muse by changing ``executor:``. Units:

- ``runtime`` is minutes (Snakemake turns ``"2h"``/``"90m"`` into minutes); a
  clock form ``HH:MM:SS`` / ``D-HH:MM:SS`` / ``MM:SS`` is converted exactly when
  it is a whole number of minutes and refused otherwise. Sent as ``time=N``.
- memory is sent in SLURM's sense, where ``M`` means MiB: ``mem=<MiB>M`` or
  ``mem-per-cpu=<MiB>M``. ``*_mb`` and ``*_gb`` keys are decimal (MB = 10**6
  bytes) and are converted up to whole MiB; ``*_mib``/``*_gib`` are binary.
  Snakemake always fills ``mem_mb`` and ``mem_mib`` from each other (and from
  ``mem="10G"``, which it reads as 10 GB); ``mem_mib`` is used when present, so
  no rounding happens twice. ``mem_gib``/``mem_gb`` are not Snakemake names and can
  only come from the user, so they win over a default ``mem_mb``.

An unusable value raises ``ResourceError`` naming the rule, the resource and the
value; it is raised before anything is uploaded.
"""

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError

from snakemake_executor_muse.sbatch_options import (
    FLAG_OPTIONS,
    PLUGIN_OWNED_OPTIONS,
    SERVICE_OWNED_OPTIONS,
    SHORT_OPTIONS,
)

MIB = 2**20
COMMENT_MAX = 80

# Options a user may not set through slurm_extra: the service or the plugin sets them.
FORBIDDEN_OPTIONS = frozenset(SERVICE_OWNED_OPTIONS) | frozenset(PLUGIN_OWNED_OPTIONS)

MEMORY_KEYS = ("mem_gib", "mem_gb", "mem_mib", "mem_mb", "mem")
KNOWN_MEMORY_LIKE = frozenset(MEMORY_KEYS) | {"mem_mb_per_cpu"}
SIZE_UNITS = {
    "": 10**6,  # a bare number is MB, as in Snakemake
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_GRES = re.compile(r"^[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)?(:\d+)?$")
_OPTION_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_UNSAFE_COMMENT = re.compile(r"[^A-Za-z0-9._-]+")


class ResourceError(WorkflowError):
    """A resource value that cannot be turned into an sbatch option."""


@dataclass
class SbatchPlan:
    """The sbatch options of one job, and what to tell the user about them."""

    options: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, value: Any = None) -> None:
        self.options.append(name if value is None else f"{name}={value}")

    def names(self) -> set[str]:
        return {option.split("=", 1)[0] for option in self.options}


def build_sbatch_list(
    rule: str,
    resources: Mapping[str, Any],
    threads: int,
    wildcards: Mapping[str, Any],
) -> SbatchPlan:
    """Translate one job's resources; raises ResourceError on unusable values."""
    plan = SbatchPlan()
    _add_runtime(plan, rule, resources)
    _add_memory(plan, rule, resources)
    _add_cpus(plan, rule, resources, threads)
    _add_placement(plan, rule, resources)
    _add_gpus(plan, rule, resources)
    _add_tasks(plan, rule, resources)
    _add_extra(plan, rule, resources)
    plan.add("comment", job_comment(rule, wildcards))
    return plan


def job_comment(rule: str, wildcards: Mapping[str, Any]) -> str:
    """``<rule>-<wildcard values>`` without "/" or spaces, capped (field case K5)."""
    parts = [str(value) for value in wildcards.values()]
    text = rule if not parts else f"{rule}-{'_'.join(parts)}"
    return sanitize_name(text)[:COMMENT_MAX]


def sanitize_name(text: str) -> str:
    """Keep letters, digits, ``.``, ``_``, ``-``; everything else becomes ``_``."""
    cleaned = _UNSAFE_COMMENT.sub("_", text).strip("_.")
    return cleaned or "job"


def _fail(rule: str, name: str, value: Any, expected: str) -> ResourceError:
    return ResourceError(
        f"Rule {rule}: resource {name}={value!r} cannot be sent to Muse: "
        f"expected {expected}. Fix the rule's resources, --set-resources or "
        "--default-resources."
    )


def _present(resources: Mapping[str, Any], name: str) -> bool:
    value = resources.get(name)
    if value is None or type(value).__name__ == "TBDString":
        return False
    return not (isinstance(value, str) and value.strip() in ("", "<TBD>"))


def _positive_int(rule: str, name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _fail(rule, name, value, "a positive whole number")
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdecimal() and int(value) > 0:
        return int(value)
    raise _fail(rule, name, value, "a positive whole number")


def _add_runtime(plan: SbatchPlan, rule: str, resources: Mapping[str, Any]) -> None:
    if not _present(resources, "runtime"):
        return
    minutes = runtime_minutes(rule, resources["runtime"])
    if minutes < 0:
        raise _fail(
            rule, "runtime", resources["runtime"], "a positive number of minutes"
        )
    if minutes < 1:
        plan.warnings.append(
            f"Rule {rule}: runtime {resources['runtime']!r} is under one minute; "
            "sending time=1 (SLURM reads time=0 as no limit)."
        )
        minutes = 1
    plan.add("time", minutes)


def runtime_minutes(rule: str, value: Any) -> int:
    """Minutes from an int, a decimal string, ``90m``/``2h``/``1d`` or a clock."""
    if isinstance(value, bool):
        raise _fail(rule, "runtime", value, "minutes")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    if text.isdecimal():
        return int(text)
    unit = re.fullmatch(r"(\d+)\s*([smhd])", text)
    if unit:
        seconds = (
            int(unit.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit.group(2)]
        )
        return _whole_minutes(rule, value, seconds)
    clock = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?", text)
    if clock:
        return _whole_minutes(rule, value, _clock_seconds(clock))
    raise _fail(
        rule, "runtime", value, "minutes (45, '90m', '2h') or a clock 'D-HH:MM:SS'"
    )


def _clock_seconds(clock: re.Match[str]) -> int:
    days = int(clock.group(1) or 0)
    if clock.group(4) is None:
        # MM:SS, as sbatch reads it; with a day part it is D-HH:MM.
        if clock.group(1):
            hours, minutes, seconds = int(clock.group(2)), int(clock.group(3)), 0
        else:
            hours, minutes, seconds = 0, int(clock.group(2)), int(clock.group(3))
    else:
        hours, minutes = int(clock.group(2)), int(clock.group(3))
        seconds = int(clock.group(4))
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _whole_minutes(rule: str, value: Any, seconds: int) -> int:
    if seconds % 60:
        raise _fail(rule, "runtime", value, "a whole number of minutes")
    return seconds // 60


def _add_memory(plan: SbatchPlan, rule: str, resources: Mapping[str, Any]) -> None:
    for name in resources:
        lowered = name.lower()
        if lowered.startswith("mem") and lowered not in KNOWN_MEMORY_LIKE:
            plan.warnings.append(
                f"Rule {rule}: resource {name!r} looks like memory but is not "
                "understood and is not sent; use mem_mb, mem_mib, mem_gb, mem_gib, "
                "mem (e.g. '10G') or mem_mb_per_cpu."
            )
    if _present(resources, "mem_mb_per_cpu"):
        megabytes = _positive_int(rule, "mem_mb_per_cpu", resources["mem_mb_per_cpu"])
        plan.add("mem-per-cpu", f"{_mib_from_bytes(megabytes * 10**6)}M")
        return
    chosen = [name for name in MEMORY_KEYS if _present(resources, name)]
    if not chosen:
        return
    if chosen[0] in ("mem_gib", "mem_gb") and len(chosen) > 1:
        plan.warnings.append(
            f"Rule {rule}: {chosen[0]} is used; the other memory values "
            f"({', '.join(chosen[1:])}) are ignored."
        )
    plan.add("mem", f"{memory_mib(rule, chosen[0], resources[chosen[0]])}M")


def memory_mib(rule: str, name: str, value: Any) -> int:
    """MiB (rounded up) for one memory resource, by its name's unit."""
    if name == "mem":
        return _mib_from_bytes(_size_bytes(rule, name, value))
    amount = _positive_int(rule, name, value)
    factor = {"mem_gib": 2**30, "mem_gb": 10**9, "mem_mib": MIB, "mem_mb": 10**6}
    return _mib_from_bytes(amount * factor[name])


def _size_bytes(rule: str, name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value * 10**6
    match = _SIZE.match(str(value))
    unit = match.group(2).upper() if match else ""
    if unit.endswith("I"):
        unit += "B"  # "10Gi" means GiB
    if not match or unit not in SIZE_UNITS or float(match.group(1)) <= 0:
        raise _fail(rule, name, value, "a size such as 4000 (MB), '10G' or '8GiB'")
    return math.ceil(float(match.group(1)) * SIZE_UNITS[unit])


def _mib_from_bytes(size: int) -> int:
    return max(1, math.ceil(size / MIB))


def _add_cpus(
    plan: SbatchPlan, rule: str, resources: Mapping[str, Any], threads: int
) -> None:
    if _present(resources, "cpus_per_task"):
        cpus = _positive_int(rule, "cpus_per_task", resources["cpus_per_task"])
    else:
        cpus = _positive_int(rule, "threads", threads)
    plan.add("cpus-per-task", cpus)


def _add_placement(plan: SbatchPlan, rule: str, resources: Mapping[str, Any]) -> None:
    for resource, option in (
        ("slurm_partition", "partition"),
        ("slurm_account", "account"),
        ("qos", "qos"),
        ("constraint", "constraint"),
    ):
        if not _present(resources, resource):
            continue
        value = str(resources[resource]).strip()
        if any(char.isspace() for char in value) or "=" in value:
            raise _fail(rule, resource, value, "one word without spaces or '='")
        plan.add(option, value)


def _add_gpus(plan: SbatchPlan, rule: str, resources: Mapping[str, Any]) -> None:
    if _present(resources, "gpu"):
        count = _positive_int(rule, "gpu", resources["gpu"])
        model = str(resources.get("gpu_model") or "").strip()
        if model and not re.fullmatch(r"[A-Za-z0-9_.-]+", model):
            raise _fail(rule, "gpu_model", model, "a model name such as 'a100'")
        plan.add("gpus", f"{model}:{count}" if model else count)
    elif _present(resources, "gpu_model"):
        raise _fail(
            rule, "gpu_model", resources["gpu_model"], "to come with a 'gpu' count"
        )
    if _present(resources, "gres"):
        gres = str(resources["gres"]).strip()
        if not all(_GRES.match(part) for part in gres.split(",")):
            raise _fail(rule, "gres", gres, "NAME[:TYPE][:COUNT], e.g. 'gpu:a100:2'")
        plan.add("gres", gres)


def _add_tasks(plan: SbatchPlan, rule: str, resources: Mapping[str, Any]) -> None:
    for resource, option in (
        ("nodes", "nodes"),
        ("tasks", "ntasks"),
        ("tasks_per_node", "ntasks-per-node"),
    ):
        if _present(resources, resource):
            plan.add(option, _positive_int(rule, resource, resources[resource]))


def _add_extra(plan: SbatchPlan, rule: str, resources: Mapping[str, Any]) -> None:
    if not _present(resources, "slurm_extra"):
        return
    raw = resources["slurm_extra"]
    taken = plan.names()
    for name, value in parse_slurm_extra(rule, raw):
        if name in FORBIDDEN_OPTIONS:
            raise _fail(
                rule,
                "slurm_extra",
                raw,
                f"no --{name}: the Muse service sets it itself",
            )
        if name in taken:
            raise _fail(
                rule,
                "slurm_extra",
                raw,
                f"no --{name}, which is already set from the rule's resources "
                "(set it in one place)",
            )
        if value is None and name not in FLAG_OPTIONS:
            raise _fail(rule, "slurm_extra", raw, f"a value for --{name}")
        taken.add(name)
        plan.add(name, value)


def parse_slurm_extra(rule: str, raw: Any) -> list[tuple[str, Any]]:
    """Split like a shell; strip one pair of protective outer quotes (K4)."""
    text = str(raw).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    try:
        tokens = shlex.split(text)
    except ValueError as error:
        raise _fail(rule, "slurm_extra", raw, f"shell-like options ({error})") from None
    options: list[tuple[str, Any]] = []
    index = 0
    while index < len(tokens):
        name, value, used = _one_option(rule, raw, tokens, index)
        options.append((name, value))
        index += used
    return options


def _one_option(
    rule: str, raw: Any, tokens: list[str], index: int
) -> tuple[str, Any, int]:
    token = tokens[index]
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    takes_next = following is not None and not following.startswith("-")
    if token.startswith("--"):
        name, sep, value = token[2:].partition("=")
        if not sep and takes_next:
            return _checked(rule, raw, name), following, 2
        return _checked(rule, raw, name), (value if sep else None), 1
    if token.startswith("-") and len(token) >= 2 and token[1] in SHORT_OPTIONS:
        name = SHORT_OPTIONS[token[1]]
        if len(token) > 2:
            return name, token[2:].lstrip("="), 1
        if takes_next:
            return name, following, 2
    raise _fail(rule, "slurm_extra", raw, f"sbatch options, not {token!r}")


def _checked(rule: str, raw: Any, name: str) -> str:
    if not _OPTION_NAME.match(name):
        raise _fail(rule, "slurm_extra", raw, f"an sbatch option name, not {name!r}")
    return name
