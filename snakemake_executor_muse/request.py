"""A Snakemake job -> a Muse run request (form fields and files to upload).

Shell mode sends, per job, ``inputs.zip`` (declared inputs and workflow sources
at workflow-relative paths) and the rendered ``muse_job.sh``, with
``files_order=["inputs.zip","muse_job.sh"]``, ``cmd="bash muse_job.sh"``,
``returned_type=run.zip``, ``todownload=no``, ``sbatch_list`` and
``module_list`` as JSON lists. Everything is checked before anything is sent.

Which mode a job runs in is decided here too (``choose_mode``): shell mode for
shell rules and for groups of shell rules (one script runs the members one after
the other), snakemake mode for ``run:``/``script:``/``wrapper:``/``notebook:``
rules, groups holding one, pipe groups, and every job under ``--muse-mode
snakemake``. Snakemake mode sends the same two files and fields; its script runs
the command of ``format_job_exec`` (Snakemake itself, on the cluster) instead of
the rule's shell command, and the upload always holds the workflow sources.

``{resources.tmpdir}`` is left unevaluated by Snakemake for remote jobs and shows
up as the literal ``<TBD>`` in the shell command; it is replaced by
``$MUSE_TMPDIR``, the job's temporary folder in the run folder (also exported as
``TMPDIR``).
"""

import json
import os
import posixpath
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError

from snakemake_executor_muse.resources import (
    SbatchPlan,
    build_sbatch_list,
    sanitize_name,
)
from snakemake_executor_muse.staging import relative_input_path, write_input_zip

JOB_SCRIPT = "muse_job.sh"
INPUT_ZIP = "inputs.zip"
TBD_TOKEN = "<TBD>"
TMPDIR_VARIABLE = "$MUSE_TMPDIR"
FALLBACK_SOFTWARE = "bash"
#: The local service's software for snakemake mode (its own Python environment).
EMBEDDED_SNAKEMAKE_SOFTWARE = "snakemake"
#: Where Snakemake fetches wrappers when --wrapper-prefix is not given.
DEFAULT_WRAPPER_PREFIX = "https://github.com/snakemake/snakemake-wrappers/raw/"
NEEDS_SNAKEMAKE = ("run", "script", "wrapper", "notebook", "cwl", "template_engine")


class RequestError(WorkflowError):
    """A job that cannot become a Muse request; raised before any upload."""


@dataclass
class JobRequest:
    """Everything needed to submit one job, and to find its results."""

    software: str
    fields: dict[str, str]
    files: list[tuple[str, Path]]
    folder: Path
    outputs: list[str]
    logs: list[str]
    benchmark: str | None
    sbatch: SbatchPlan
    input_members: list[str] = field(default_factory=list)

    @property
    def declared(self) -> list[str]:
        return [
            *self.outputs,
            *self.logs,
            *([self.benchmark] if self.benchmark else []),
        ]

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def required_mode(job: Any) -> str:
    """``shell`` for shell rules; otherwise the rule kind needing snakemake mode."""
    if job.is_group():
        return "group"
    return rule_kind(job)


def rule_kind(job: Any) -> str:
    """What a single job's rule runs: ``shell``, ``run``, ``script``, ..."""
    if getattr(job, "is_shell", False):
        return "shell"
    for kind in NEEDS_SNAKEMAKE:
        if getattr(job, f"is_{kind}", False):
            return kind
    return "run"


def member_jobs(job: Any) -> list[Any]:
    """The jobs one Muse job runs: a group's members in topological order."""
    if not job.is_group():
        return [job]
    return [member for layer in job.toposorted for member in sorted(layer)]


def job_name(job: Any) -> str:
    """A rule's name, or a group job's (``GROUPID_RULE1_RULE2``)."""
    return str(job.name) if job.is_group() else str(job.rule.name)


def job_title(job: Any) -> str:
    """A job as messages name it: ``rule a (n=1)``, ``group job g (rules a, b)``."""
    text = _wildcards_text(wildcards_of(job))
    if job.is_group():
        rules = ", ".join(sorted(set(job.rules)))
        return f"group job {job.groupid} (rules {rules}" + (
            f"; {text})" if text else ")"
        )
    return f"rule {job.rule.name}" + (f" ({text})" if text else "")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _needs_snakemake(job: Any) -> list[tuple[str, str]]:
    """(rule, kind) of the members that are not shell rules."""
    kinds = [(member.rule.name, rule_kind(member)) for member in member_jobs(job)]
    return [(rule, kind) for rule, kind in kinds if kind != "shell"]


def _runs_concurrently(job: Any) -> bool:
    """A group with pipe() or service() outputs: its members must run together."""
    return bool(job.is_group()) and any(
        member.is_pipe or member.is_service for member in member_jobs(job)
    )


def choose_mode(job: Any, setting: str) -> str:
    """``shell`` or ``snakemake`` for this job under ``--muse-mode SETTING``.

    Groups whose members are all shell rules run in shell mode, one command after
    the other; pipe groups need their members at the same time, which only
    Snakemake itself does, so ``auto`` runs them in snakemake mode.
    """
    if setting == "snakemake":
        return "snakemake"
    others = _needs_snakemake(job)
    concurrent = _runs_concurrently(job)
    if setting == "shell":
        _check_shell_only(job, others, concurrent)
        return "shell"
    return "snakemake" if others or concurrent else "shell"


def _check_shell_only(
    job: Any, others: list[tuple[str, str]], concurrent: bool
) -> None:
    title = _capital(job_title(job))
    if others:
        rule, kind = others[0]
        raise RequestError(
            f"{title}: rule {rule} is a {kind}: rule, which shell mode "
            "(--muse-mode shell) cannot run: it needs Snakemake on the cluster. "
            "Use --muse-mode auto (the default) with --muse-snakemake-software, or "
            "write the rule with shell:."
        )
    if concurrent:
        raise RequestError(
            f"{title} has pipe() or service() outputs, so its jobs must run at the "
            "same time, but shell mode (--muse-mode shell) runs them one after the "
            "other. Use --muse-mode auto (the default) or snakemake, which run such "
            "groups with Snakemake on the cluster."
        )


def snakemake_reason(job: Any, setting: str) -> str:
    """Why a job runs in snakemake mode, for messages."""
    others = _needs_snakemake(job)
    if setting == "snakemake" or not (others or _runs_concurrently(job)):
        return "runs in snakemake mode (--muse-mode snakemake)"
    if not others:
        return "has pipe() or service() outputs and needs snakemake mode"
    rule, kind = others[0]
    if job.is_group():
        return f"contains the {kind}: rule {rule} and needs snakemake mode"
    return f"is a {kind}: rule and needs snakemake mode"


def choose_snakemake_software(
    job: Any, configured: str | None, embedded: bool, setting: str
) -> str:
    """``--muse-snakemake-software``; with the local service, its ``snakemake``."""
    if configured:
        return configured
    if embedded:
        return EMBEDDED_SNAKEMAKE_SOFTWARE
    rules = " ".join(sorted({member.rule.name for member in member_jobs(job)}))
    raise RequestError(
        f"{_capital(job_title(job))} {snakemake_reason(job, setting)}: a Muse "
        f"software with Python and Snakemake {_snakemake_series()} "
        "('python -m snakemake' on its PATH). None is configured: set "
        "--muse-snakemake-software NAME (GET software/list shows the names the "
        "service offers), or write the rule with shell:, or run it on this machine "
        f"with 'localrules: {rules}'."
    )


def choose_group_software(job: Any, default: str | None, fallback_allowed: bool) -> str:
    """The one software of a shell job or of all members of a shell group."""
    names = {
        choose_software(member, default, fallback_allowed)
        for member in member_jobs(job)
    }
    if len(names) > 1:
        raise RequestError(
            f"{_capital(job_title(job))}: its rules name different Muse softwares "
            f"({', '.join(sorted(names))}), but a group runs as one Muse job in one "
            "software. Give the group's rules the same muse_software resource, or "
            "take them out of the group."
        )
    return names.pop()


def group_module_list(job: Any, use_envmodules: bool) -> list[str]:
    """The env modules of every member, in order, each once."""
    modules: dict[str, None] = {}
    for member in member_jobs(job):
        for name in module_list(member, use_envmodules):
            modules.setdefault(name)
    return list(modules)


def wrapper_hint(job: Any, prefix: str | None) -> str:
    """What to tell the user when a wrapper: job fails on the cluster."""
    wrappers = [m for m in member_jobs(job) if getattr(m, "is_wrapper", False)]
    if not wrappers:
        return ""
    rule = wrappers[0].rule
    source = prefix or DEFAULT_WRAPPER_PREFIX
    return (
        f"muse: rule {rule.name} uses the wrapper {rule.wrapper}, which Snakemake "
        f"fetches on the cluster at run time from {source}: the cluster needs "
        "network access to it, or give --wrapper-prefix a local copy of the "
        "wrappers that the cluster can read (file:///path/to/snakemake-wrappers/). "
        "If the error above is about fetching the wrapper, that is the cause."
    )


def check_snakemake_paths(snakefile: str, configfiles: Iterable[str]) -> None:
    """The Snakefile and config files must be uploadable (below the workdir)."""
    workdir = Path.cwd()
    for kind, path in [
        ("Snakefile", snakefile),
        *(("config file", c) for c in configfiles),
    ]:
        try:
            relative_input_path(str(path), workdir)
        except Exception:
            raise RequestError(
                f"The {kind} {path} is outside the working directory {workdir}; "
                "snakemake mode runs Snakemake on the cluster in a copy of the "
                "working directory, which cannot hold it. Move it into the working "
                "directory (or run Snakemake from a folder that contains it)."
            ) from None


def wildcards_of(job: Any) -> dict[str, str]:
    """A job's wildcards; for a group, those its members agree on."""
    if job.is_group():
        return _shared_wildcards([wildcards_of(m) for m in member_jobs(job)])
    wildcards = getattr(job, "wildcards_dict", None) or {}
    return {str(k): str(v) for k, v in dict(wildcards).items()}


def _shared_wildcards(per_member: list[dict[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    conflicting: set[str] = set()
    for wildcards in per_member:
        for name, value in wildcards.items():
            if merged.setdefault(name, value) != value:
                conflicting.add(name)
    return {k: v for k, v in merged.items() if k not in conflicting}


def wildcards_folder(wildcards: Mapping[str, str]) -> str:
    """A folder name for a job's wildcards without "/" (field case K5)."""
    if not wildcards:
        return "no_wildcards"
    text = "_".join(f"{k}-{v}" for k, v in sorted(wildcards.items()))
    return sanitize_name(text)[:120]


def choose_software(
    job: Any,
    default: str | None,
    fallback_allowed: bool,
) -> str:
    """The rule's ``muse_software`` resource, else the setting, else ``bash``
    when the local service runs any software on the host."""
    named = job.resources.get("muse_software")
    if isinstance(named, str) and named.strip() and named != TBD_TOKEN:
        return named.strip()
    if default:
        return default
    if fallback_allowed:
        return FALLBACK_SOFTWARE
    raise RequestError(
        f"Rule {job.rule.name}: no Muse software named: set the rule resource "
        "muse_software='NAME' (or --set-resources RULE:muse_software=NAME), or "
        "--muse-software NAME for every shell rule. GET software/list shows the "
        "names the service offers."
    )


def declared_files(
    job: Any, skip: frozenset[str] = frozenset()
) -> tuple[list[str], list[str], str | None]:
    """Outputs, logs and benchmark that must come back, workflow-relative.

    For a group job these are every member's (Snakemake checks each member's
    outputs, intermediates too), with the members' benchmarks among the outputs;
    pipe()/service() outputs and the paths in ``skip`` (temp files no job outside
    the group needs) are left out.
    """
    if job.is_group():
        return _group_declared_files(job, skip)
    outputs = [_workflow_path(job, str(f), "output") for f in job.output]
    logs = [_workflow_path(job, str(f), "log") for f in job.log]
    benchmark = job.benchmark
    bench = _workflow_path(job, str(benchmark), "benchmark") if benchmark else None
    return outputs, logs, bench


def _group_declared_files(
    job: Any, skip: frozenset[str]
) -> tuple[list[str], list[str], None]:
    outputs: list[str] = []
    logs: list[str] = []
    for member in member_jobs(job):
        member_outputs, member_logs, benchmark = declared_files(member)
        for path, original in zip(member_outputs, member.output, strict=True):
            flags = getattr(original, "flags", {})
            if path not in skip and not (flags.get("pipe") or flags.get("service")):
                outputs.append(path)
        outputs += [benchmark] if benchmark else []
        logs += member_logs
    return outputs, logs, None


def _workflow_path(job: Any, path: str, kind: str) -> str:
    try:
        return relative_input_path(path, Path.cwd())
    except Exception as error:
        raise RequestError(
            f"Rule {job.rule.name}: {kind} {path} is outside the working "
            "directory; Muse results can only be brought back below it."
        ) from error


def shell_command(job: Any) -> str:
    command = job.shellcmd
    if not command or not str(command).strip():
        raise RequestError(
            f"Rule {job.rule.name} has no shell command to run in shell mode."
        )
    return str(command).replace(TBD_TOKEN, TMPDIR_VARIABLE)


@lru_cache(maxsize=1)
def _template() -> Any:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("snakemake_executor_muse", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["shquote"] = shlex.quote
    return environment.get_template("job.sh.j2")


@dataclass(frozen=True)
class Step:
    """One command of a job script: a rule's shell command, or the Snakemake call."""

    rule: str
    wildcards: str
    command: str
    folders: tuple[str, ...] = ()
    benchmark: str | None = None


@dataclass(frozen=True)
class ScriptPlan:
    """What a job script runs, checks and reports."""

    mode: str
    title: str
    steps: tuple[Step, ...]
    declared: tuple[str, ...]
    remove_on_success: tuple[str, ...] = ()
    failure_hint: str = ""
    software: str = ""


def render_script(plan: ScriptPlan) -> str:
    """A job script (templates/job.sh.j2) for either mode."""
    snakemake_mode = plan.mode == "snakemake"
    needs = "Needs Python with Snakemake." if snakemake_mode else "Needs only bash."
    return _template().render(
        mode=plan.mode,
        title=plan.title,
        needs=needs,
        steps=plan.steps,
        benchmarks=any(step.benchmark for step in plan.steps),
        check_snakemake=snakemake_mode,
        software=plan.software,
        snakemake_version=_snakemake_series(),
        failure_hint=plan.failure_hint,
        remove_on_success=plan.remove_on_success,
        declared=plan.declared,
    )


def _snakemake_series() -> str:
    from importlib.metadata import version

    return version("snakemake").split(".")[0] + ".x"


def shell_step(job: Any) -> Step:
    """A shell rule's command with the parent folders of its declared files."""
    outputs, logs, benchmark = declared_files(job)
    declared = [*outputs, *logs, *([benchmark] if benchmark else [])]
    folders = sorted({posixpath.dirname(p) for p in declared if posixpath.dirname(p)})
    return Step(
        job.rule.name,
        _wildcards_text(wildcards_of(job)),
        shell_command(job),
        tuple(folders),
        benchmark,
    )


def _wildcards_text(wildcards: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in wildcards.items())


def render_job_script(
    rule: str,
    wildcards: Mapping[str, str],
    command: str,
    outputs: list[str],
    logs: list[str],
    benchmark: str | None,
) -> str:
    """The shell-mode job script of one job."""
    declared = [*outputs, *logs, *([benchmark] if benchmark else [])]
    folders = sorted({posixpath.dirname(p) for p in declared if posixpath.dirname(p)})
    text = _wildcards_text(wildcards)
    step = Step(rule, text, command, tuple(folders), benchmark)
    title = f"rule {rule}" + (f" ({text})" if text else "")
    return render_script(ScriptPlan("shell", title, (step,), tuple(declared)))


def module_list(job: Any, use_envmodules: bool) -> list[str]:
    """The rule's ``envmodules:`` in order, when ``--use-envmodules`` is on.

    Snakemake hands them over as an ``EnvModules`` object whose ``names`` hold the
    module names; without the flag Snakemake ignores them, and so does the plugin.
    """
    modules = getattr(job, "env_modules", None) if use_envmodules else None
    if modules is None:
        return []
    return [str(name) for name in getattr(modules, "names", ())]


def upload_paths(job: Any, sources: Iterable[str]) -> list[str]:
    """Declared inputs first (their errors matter), then the workflow sources."""
    paths = [str(f) for f in job.input]
    for path in paths:
        relative_input_path(path, Path.cwd())
    return paths + [s for s in sources if s not in paths]


#: Folders of Snakemake's recommended layout that hold files a shell command may
#: call without declaring them (scripts, rule files, environment files, config).
LAYOUT_FOLDERS = ("scripts", "rules", "envs", "config", "schemas")
#: Past this many files the layout folders are not walked: they are not sources.
MAX_LAYOUT_FILES = 2000


def layout_sources(snakefile_dir: Path, workdir: Path) -> list[str]:
    """Files in the Snakemake layout folders beside the Snakefile, workdir-relative.

    Snakemake lists undeclared helper files only through ``git ls-files``; outside a
    git repository a shell command calling ``scripts/x.py`` would then find nothing
    on the cluster. These folders are the conventional home of such files.
    """
    found: list[str] = []
    for name in LAYOUT_FOLDERS:
        folder = snakefile_dir / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if len(found) >= MAX_LAYOUT_FILES:
                return found
            found.append(os.path.relpath(path, workdir))
    return found


def usable_sources(
    sources: Iterable[str], workdir: Path
) -> tuple[list[str], list[str]]:
    """Split workflow sources into uploadable ones and those outside or missing."""
    usable, skipped = [], []
    for source in sorted(set(sources)):
        try:
            relative = relative_input_path(source, workdir)
        except Exception:
            skipped.append(source)
            continue
        if relative == "." or not os.path.isfile(workdir / relative):
            skipped.append(source)
            continue
        usable.append(relative)
    return usable, skipped


def build_shell_request(
    job: Any,
    software: str,
    sources: Iterable[str],
    modules: list[str],
    staging_root: Path,
) -> JobRequest:
    """Validate, render and zip one shell job; nothing is uploaded here."""
    outputs, logs, benchmark = declared_files(job)
    script = render_job_script(
        job.rule.name,
        wildcards_of(job),
        shell_command(job),
        outputs,
        logs,
        benchmark,
    )
    package = Package(outputs, logs, benchmark, script)
    return _package(job, software, sources, modules, staging_root, package)


@dataclass(frozen=True)
class Package:
    """What a request carries besides the inputs: the script and what it makes."""

    outputs: list[str]
    logs: list[str]
    benchmark: str | None
    script: str


def _package(
    job: Any,
    software: str,
    sources: Iterable[str],
    modules: list[str],
    staging_root: Path,
    package: Package,
) -> JobRequest:
    """Resources, the input zip and the form fields of any job (or group job)."""
    name = job_name(job)
    sbatch = build_sbatch_list(
        name, dict(job.resources.items()), job.threads, wildcards_of(job)
    )
    paths = upload_paths(job, sources)

    staging_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{sanitize_name(name)}-", dir=staging_root))
    try:
        members = write_input_zip(folder / INPUT_ZIP, paths, Path.cwd())
        (folder / JOB_SCRIPT).write_text(package.script)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    fields = {
        "cmd": f"bash {JOB_SCRIPT}",
        "files_order": json.dumps([INPUT_ZIP, JOB_SCRIPT]),
        "returned_type": "run.zip",
        "todownload": "no",
        "sbatch_list": json.dumps(sbatch.options),
        "module_list": json.dumps(modules),
    }
    files = [(INPUT_ZIP, folder / INPUT_ZIP), (JOB_SCRIPT, folder / JOB_SCRIPT)]
    return JobRequest(
        software,
        fields,
        files,
        folder,
        package.outputs,
        package.logs,
        package.benchmark,
        sbatch,
        members,
    )


def build_group_shell_request(
    job: Any,
    software: str,
    sources: Iterable[str],
    modules: list[str],
    staging_root: Path,
    unneeded: frozenset[str] = frozenset(),
) -> JobRequest:
    """One job script running a group's shell rules in topological order."""
    steps = tuple(shell_step(member) for member in member_jobs(job))
    outputs, logs, _ = declared_files(job, unneeded)
    plan = ScriptPlan(
        "shell",
        job_title(job),
        steps,
        tuple([*outputs, *logs]),
        remove_on_success=tuple(sorted(unneeded)),
    )
    package = Package(outputs, logs, None, render_script(plan))
    return _package(job, software, sources, modules, staging_root, package)


def build_snakemake_request(
    job: Any,
    software: str,
    command: str,
    sources: Iterable[str],
    modules: list[str],
    staging_root: Path,
    unneeded: frozenset[str] = frozenset(),
    failure_hint: str = "",
) -> JobRequest:
    """A job (or group job) run by Snakemake itself inside ``software``."""
    outputs, logs, benchmark = declared_files(job, unneeded)
    step = Step(job_name(job), _wildcards_text(wildcards_of(job)), command)
    declared = [*outputs, *logs, *([benchmark] if benchmark else [])]
    plan = ScriptPlan(
        "snakemake",
        job_title(job),
        (step,),
        tuple(declared),
        remove_on_success=(".snakemake",),
        failure_hint=failure_hint,
        software=software,
    )
    package = Package(outputs, logs, benchmark, render_script(plan))
    return _package(job, software, sources, modules, staging_root, package)
