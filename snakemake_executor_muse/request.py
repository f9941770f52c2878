"""A Snakemake job -> a Muse run request (form fields and files to upload).

Shell mode sends, per job, ``inputs.zip`` (declared inputs and workflow sources
at workflow-relative paths) and the rendered ``muse_job.sh``, with
``files_order=["inputs.zip","muse_job.sh"]``, ``cmd="bash muse_job.sh"``,
``returned_type=run.zip``, ``todownload=no``, ``sbatch_list`` and
``module_list`` as JSON lists. Everything is checked before anything is sent.

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
    if getattr(job, "is_shell", False):
        return "shell"
    for kind in NEEDS_SNAKEMAKE:
        if getattr(job, f"is_{kind}", False):
            return kind
    return "run"


def wildcards_of(job: Any) -> dict[str, str]:
    wildcards = getattr(job, "wildcards_dict", None) or {}
    return {str(k): str(v) for k, v in dict(wildcards).items()}


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


def declared_files(job: Any) -> tuple[list[str], list[str], str | None]:
    outputs = [_workflow_path(job, str(f), "output") for f in job.output]
    logs = [_workflow_path(job, str(f), "log") for f in job.log]
    benchmark = job.benchmark
    bench = _workflow_path(job, str(benchmark), "benchmark") if benchmark else None
    return outputs, logs, bench


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


def render_job_script(
    rule: str,
    wildcards: Mapping[str, str],
    command: str,
    outputs: list[str],
    logs: list[str],
    benchmark: str | None,
) -> str:
    """The shell-mode job script (templates/job.sh.j2)."""
    declared = [*outputs, *logs, *([benchmark] if benchmark else [])]
    folders = sorted({posixpath.dirname(p) for p in declared if posixpath.dirname(p)})
    return _template().render(
        rule=rule,
        wildcards=", ".join(f"{k}={v}" for k, v in wildcards.items()),
        command=command,
        parent_folders=folders,
        benchmark=benchmark,
        declared=declared,
    )


def module_list(job: Any, use_envmodules: bool) -> list[str]:
    modules = getattr(job, "env_modules", None) if use_envmodules else None
    return [str(m) for m in modules] if modules else []


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
    rule = job.rule.name
    wildcards = wildcards_of(job)
    sbatch = build_sbatch_list(
        rule, dict(job.resources.items()), job.threads, wildcards
    )
    outputs, logs, benchmark = declared_files(job)
    script = render_job_script(
        rule, wildcards, shell_command(job), outputs, logs, benchmark
    )
    paths = upload_paths(job, sources)

    staging_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{sanitize_name(rule)}-", dir=staging_root))
    try:
        members = write_input_zip(folder / INPUT_ZIP, paths, Path.cwd())
        (folder / JOB_SCRIPT).write_text(script)
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
        software, fields, files, folder, outputs, logs, benchmark, sbatch, members
    )
