"""The Snakemake executor: orchestration of submit, poll, collect and cancel.

Everything that talks to Muse lives in ``client``, what a job sends in
``request``/``resources``, how results come back in ``staging``, and what a
state means in ``states``. Nothing raises out of ``run_job`` or
``check_active_jobs``: a problem becomes ``report_job_error`` for that job (which
honours ``--retries``), or a warning while a transient error is within its grace.
"""

import asyncio
import concurrent.futures
import logging
import shutil
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from snakemake_executor_muse import states
from snakemake_executor_muse.client import (
    MuseAuthError,
    MuseClient,
    MuseError,
    MuseNotFoundError,
    MuseTransientError,
    RedactingFilter,
    Redactor,
)
from snakemake_executor_muse.request import (
    FALLBACK_SOFTWARE,
    JobRequest,
    build_group_shell_request,
    build_shell_request,
    build_snakemake_request,
    check_snakemake_paths,
    choose_group_software,
    choose_mode,
    choose_snakemake_software,
    declared_files,
    group_module_list,
    job_name,
    job_title,
    layout_sources,
    member_jobs,
    usable_sources,
    wildcards_folder,
    wildcards_of,
    wrapper_hint,
)
from snakemake_executor_muse.staging import (
    CorruptArchiveError,
    StagingError,
    copy_member,
    extract_selected,
    missing_paths,
    read_member_text,
    relative_input_path,
    tail_text,
    touch_flag,
    verify_archive,
    write_protect,
)

MUSE_DIR = Path(".snakemake") / "muse"
STDOUT = "__WS__stdout.txt"
STDERR = "__WS__stderr.txt"
DOWNLOAD_ATTEMPTS = 3
CANCEL_DEADLINE = 15.0
CANCEL_ATTEMPTS = 3
CANCEL_THREADS = 16
WARN_EVERY = 60.0
MIN_INTERVAL = 0.5


@dataclass
class Tracked:
    """What the executor keeps per submitted job (``SubmittedJobInfo.aux``)."""

    software: str
    key: str
    rule: str
    log_dir: Path
    outputs: list[str]
    logs: list[str]
    benchmark: str | None
    can_cancel: bool
    submitted: float = field(default_factory=time.monotonic)
    error_since: float | None = None
    unknown_since: float | None = None
    last_warning: float = 0.0
    last_state: str = ""
    touched: list[str] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)

    @property
    def results(self) -> list[str]:
        """Outputs (but touch() flags, made here) and benchmark: what must come
        back for a success."""
        outputs = [p for p in self.outputs if p not in self.touched]
        return [*outputs, *([self.benchmark] if self.benchmark else [])]

    @property
    def declared(self) -> list[str]:
        return [*self.results, *self.logs]


@dataclass
class Outcome:
    """The result of one check: still active, or reported with these words."""

    active: bool
    success: bool = False
    message: str = ""
    aux_logs: list[str] = field(default_factory=list)
    auth_problem: str = ""


def flagged_outputs(job: Any, flag: str) -> list[str]:
    """Workflow-relative paths of the job's outputs carrying a Snakemake flag
    (for a group job, of every member's outputs)."""
    outputs = [f for member in member_jobs(job) for f in member.output]
    paths = [str(f) for f in outputs if flag in (getattr(f, "flags", None) or {})]
    return [relative_input_path(p, Path.cwd()) for p in paths]


class Executor(RemoteExecutor):
    """Runs each Snakemake job as one Muse job."""

    def __post_init__(self) -> None:
        self._ready = False
        self._service: Any = None
        self._sources: list[str] | None = None
        self._seen_keys: set[str] = set()
        # every key not yet reported: the polling thread holds the jobs it is
        # checking outside active_jobs, and Ctrl-C must cancel those too
        self._live: dict[str, Tracked] = {}
        self._fallback_said = False
        self.redact = Redactor()
        settings = self.workflow.executor_settings
        for secret in (settings.jwt, settings.password):
            self.redact.add(secret)
        logging.getLogger("snakemake").addFilter(RedactingFilter(self.redact))
        self.client = self._connect(settings)
        self._ready = True

    # -- start and stop -----------------------------------------------------

    def _connect(self, settings: Any) -> MuseClient:
        url, username, password = settings.url, settings.username, settings.password
        if url is None:
            from snakemake_executor_muse import embedded

            self._service = embedded.start(
                Path.cwd(), settings.local_catalog, settings.local_backend
            )
            url = self._service.url
            username, password = self._service.username, self._service.password
            self.redact.add(password)
            self.logger.info(
                f"Muse: no --muse-url given; started the local Muse service on "
                f"{url} (state in {self._service.state_dir})"
            )
        client = MuseClient(
            url,
            jwt=settings.jwt if settings.url is not None else None,
            username=username,
            password=password,
            timeout=float(settings.request_timeout),
            logger=self.logger,  # type: ignore[arg-type]
        )
        client.redact = self.redact
        if not settings.jwt or settings.url is None:
            if not client.can_renew:
                raise WorkflowError(
                    f"Muse at {url} needs a JWT: set SNAKEMAKE_MUSE_JWT, or "
                    "SNAKEMAKE_MUSE_USERNAME and SNAKEMAKE_MUSE_PASSWORD."
                )
            try:
                self.redact.add(client.obtain_jwt())
            except MuseError as error:
                raise WorkflowError(f"Muse: cannot obtain a JWT: {error}") from None
        return client

    def shutdown(self) -> None:
        super().shutdown()
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if getattr(self, "_service", None) is not None:
            self._service.stop()

    # -- submission -----------------------------------------------------------

    def run_job(self, job: JobExecutorInterface) -> None:
        try:
            self._submit(job)
        except Exception as error:  # nothing may escape run_job
            message = (
                self.redact(error)
                if isinstance(error, WorkflowError)
                else (self.redact(f"{type(error).__name__}: {error}"))
            )
            self.report_job_error(SubmittedJobInfo(job), msg=message + "\n")

    def report_job_error(
        self, job_info: SubmittedJobInfo, msg: str | None = None, **kwargs: Any
    ) -> None:
        """Snakemake prints no message for a failed group job: say it here."""
        job = getattr(job_info, "job", None)
        if msg and job is not None and job.is_group():
            self.logger.error(f"Muse: {job_title(job)} failed:\n{msg}")
        super().report_job_error(job_info, msg=msg, **kwargs)

    def _submit(self, job: Any) -> None:
        mode = choose_mode(job, self.workflow.executor_settings.mode)
        software = self._software_for(job, mode)
        if self._reattach(job, software):
            return
        request = self._build_request(job, mode, software)
        for warning in request.sbatch.warnings:
            self.logger.warning(warning)
        try:
            submission = self.client.submit(software, request.fields, request.files)
        except MuseNotFoundError as error:
            raise WorkflowError(
                f"{self.redact(error)}\nName a software the service offers in the "
                "rule's resource muse_software (or --set-resources "
                "RULE:muse_software=NAME, or --muse-software for all shell rules)"
                + self._catalog_hint()
            ) from error
        finally:
            request.cleanup()
        tracked = self._track(job, software, submission.key, submission.can_cancel)
        self.logger.info(
            f"Muse: {self._job_label(job)} submitted as key {tracked.key} to "
            f"{software} ({mode} mode) [{' '.join(request.sbatch.options)}]; "
            f"logs kept in {tracked.log_dir} if it fails"
        )
        self.report_job_submission(
            SubmittedJobInfo(job, external_jobid=tracked.key, aux={"muse": tracked})
        )

    def _catalog_hint(self) -> str:
        if self._service is None:
            return "."
        return (
            "; the local service started for this run knows only the softwares of "
            "--muse-local-catalog: add it there, or leave that option out to run "
            "any software name on this host."
        )

    def _software_for(self, job: Any, mode: str) -> str:
        settings = self.workflow.executor_settings
        if mode == "snakemake":
            return choose_snakemake_software(
                job,
                settings.snakemake_software,
                self._service is not None,
                settings.mode,
            )
        software = choose_group_software(
            job,
            settings.software,
            self._service is not None and self._service.any_software,
        )
        self._say_fallback(software, settings.software)
        return software

    def _build_request(self, job: Any, mode: str, software: str) -> JobRequest:
        """The request of one job or group job; nothing is uploaded here."""
        sources = self._workflow_sources()
        modules = group_module_list(job, self._use_envmodules())
        staging = MUSE_DIR / "uploads"
        unneeded = self._unneeded_temp_files(job)
        if mode == "snakemake":
            workflow = self.workflow
            configfiles = workflow.overwrite_configfiles or []
            check_snakemake_paths(self.get_snakefile(), configfiles)
            hint = wrapper_hint(job, workflow.workflow_settings.wrapper_prefix)
            command = self.format_job_exec(job)
            return build_snakemake_request(
                job, software, command, sources, modules, staging, unneeded, hint
            )
        if job.is_group():
            return build_group_shell_request(
                job, software, sources, modules, staging, unneeded
            )
        return build_shell_request(job, software, sources, modules, staging)

    def _unneeded_temp_files(self, job: Any) -> frozenset[str]:
        """A group's temp() files no job outside it needs: Snakemake lets them be
        missing, the remote Snakemake deletes them, so they are not brought back."""
        if not job.is_group():
            return frozenset()
        files = self.workflow.dag.get_unneeded_temp_files(job)
        return frozenset(relative_input_path(str(f), Path.cwd()) for f in files)

    def additional_general_args(self) -> str:
        """The remote Snakemake works in the Muse run folder, never in a local
        --directory (argparse keeps the last --directory given)."""
        return "--directory ."

    def _job_label(self, job: Any) -> str:
        if job.is_group():
            return job_title(job)
        return f"rule {job.rule.name} ({self._wildcards_text(job)})"

    def _say_fallback(self, software: str, configured: str | None) -> None:
        if software == FALLBACK_SOFTWARE and not configured and not self._fallback_said:
            self._fallback_said = True
            self.logger.info(
                "Muse: rules without a muse_software resource run with the "
                f"software '{FALLBACK_SOFTWARE}' on the local service's host "
                "(set --muse-software to choose another)."
            )

    def _reattach(self, job: Any, software: str) -> bool:
        """Follow the key of a previous run's job instead of submitting again."""
        if job.attempt != 1:
            return False
        try:
            key = self.dag.incomplete_external_jobid(job)
        except WorkflowError as error:
            label = self._job_label(job)
            self.logger.warning(f"Muse: not reattaching {label}: {error}")
            return False
        if (
            not key
            or key in self._seen_keys
            or not self._still_followable(key, software)
        ):
            return False
        tracked = self._track(job, software, key, can_cancel=self._service is not None)
        self.logger.info(
            f"Muse: {self._job_label(job)} reattached to key {key} from a previous "
            f"run; logs kept in {tracked.log_dir} if it fails"
        )
        self.report_job_submission(
            SubmittedJobInfo(job, external_jobid=key, aux={"muse": tracked})
        )
        return True

    def _still_followable(self, key: str, software: str) -> bool:
        """True for a previous key the service still runs or has finished well.

        A key the service does not know, or a job that failed, is submitted
        afresh; a transient error does not cause a second submission (the key is
        followed, and polling rides out the error)."""
        try:
            body = self.client.state(software, key)
        except MuseNotFoundError as error:
            self.logger.warning(
                f"Muse: the service no longer knows key {key} of a previous run "
                f"({error}); submitting the job again."
            )
            return False
        except MuseAuthError:
            raise
        except MuseError as error:
            self.logger.warning(
                f"Muse: following key {key} of a previous run although its state "
                f"is not readable yet: {error}"
            )
            return True
        decision = states.decide(states.parse_state_report(body))
        if decision.verdict is states.Verdict.FAILURE:
            self.logger.info(
                f"Muse: key {key} of a previous run failed ({decision.reason}); "
                "submitting the job again."
            )
            return False
        return True

    def _track(self, job: Any, software: str, key: str, can_cancel: bool) -> Tracked:
        self._seen_keys.add(key)
        outputs, logs, benchmark = declared_files(job, self._unneeded_temp_files(job))
        name = job_name(job)
        log_dir = MUSE_DIR / "logs" / name / wildcards_folder(wildcards_of(job)) / key
        tracked = Tracked(
            software, key, name, log_dir, outputs, logs, benchmark, can_cancel
        )
        tracked.touched = flagged_outputs(job, "touch")
        tracked.protected = flagged_outputs(job, "protected")
        self._live_jobs()[key] = tracked
        return tracked

    def _live_jobs(self) -> dict[str, Tracked]:
        """Keys not yet reported (made here too: tests build half an executor)."""
        if "_live" not in self.__dict__:
            self._live = {}
        return self._live

    def _wildcards_text(self, job: Any) -> str:
        wildcards = wildcards_of(job)
        return ", ".join(f"{k}={v}" for k, v in wildcards.items()) or "no wildcards"

    def _workflow_sources(self) -> list[str]:
        if self._sources is None:
            workdir = Path.cwd()
            snakefile_dir = Path(self.workflow.main_snakefile).resolve().parent
            listed = set(self.dag.get_sources())
            listed.update(layout_sources(snakefile_dir, workdir))
            usable, skipped = usable_sources(listed, workdir)
            if skipped:
                self.logger.warning(
                    "Muse: workflow sources outside the working directory or "
                    f"missing are not uploaded: {', '.join(skipped[:10])}"
                )
            self._sources = usable
        return self._sources

    def _use_envmodules(self) -> bool:
        methods = self.workflow.deployment_settings.deployment_method
        return DeploymentMethod.ENV_MODULES in methods

    # -- polling --------------------------------------------------------------

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not getattr(self, "_ready", False) or not active_jobs:
            for job_info in active_jobs:
                yield job_info
            return
        outcomes = await asyncio.gather(
            *(self._check_guarded(job_info) for job_info in active_jobs)
        )
        for job_info, outcome in zip(active_jobs, outcomes, strict=True):
            if outcome.active:
                yield job_info
                continue
            tracked = self._tracked(job_info)
            if tracked is not None:
                self._live_jobs().pop(tracked.key, None)
            if outcome.success:
                self.report_job_success(job_info)
            else:
                self.report_job_error(
                    job_info, msg=outcome.message, aux_logs=outcome.aux_logs
                )
        self._adapt_interval(active_jobs)
        self._stop_if_auth_expired(active_jobs, outcomes)

    def _stop_if_auth_expired(
        self, active_jobs: list[SubmittedJobInfo], outcomes: list[Outcome]
    ) -> None:
        """A JWT that cannot be renewed ends the run, leaving the jobs alone: they
        are neither failed nor cleaned, so their incomplete markers keep the keys
        and the next run (with a new JWT) follows them."""
        problems = [o.auth_problem for o in outcomes if o.auth_problem]
        if not problems:
            return
        running = [
            tracked
            for tracked, outcome in zip(
                map(self._tracked, active_jobs), outcomes, strict=True
            )
            if tracked is not None and outcome.active
        ]
        keys = "\n".join(f"  {t.key} ({t.rule}, {t.software})" for t in running)
        message = (
            f"Muse: authentication expired and cannot be renewed "
            f"({self.redact(problems[0])}). Stopped following {len(running)} "
            f"job(s), which keep running on Muse and are not marked failed:\n{keys}\n"
            "Set a new SNAKEMAKE_MUSE_JWT (or SNAKEMAKE_MUSE_USERNAME and "
            "SNAKEMAKE_MUSE_PASSWORD, so that the plugin renews it) and run "
            "Snakemake again: it follows these keys instead of submitting again."
        )
        self.logger.error(message)
        raise WorkflowError(message)

    async def _check_guarded(self, job_info: SubmittedJobInfo) -> Outcome:
        try:
            return await self._check_one(job_info)
        except Exception as error:  # nothing may escape check_active_jobs
            tracked = self._tracked(job_info)
            if tracked is None:
                return Outcome(False, message=f"Muse: job lost its key ({error})")
            return self._transient(tracked, f"{type(error).__name__}: {error}")

    def _tracked(self, job_info: SubmittedJobInfo) -> Tracked | None:
        aux = job_info.aux or {}
        tracked = aux.get("muse")
        return tracked if isinstance(tracked, Tracked) else None

    async def _check_one(self, job_info: SubmittedJobInfo) -> Outcome:
        tracked = self._tracked(job_info)
        if tracked is None:
            return Outcome(False, message="Muse: internal error: job without a key")
        try:
            async with self.status_rate_limiter:
                if getattr(self, "_stopping", False):
                    # Ctrl-C: let the polling thread's cycle end at once, so
                    # that shutdown() is not held by hundreds of state requests
                    return Outcome(True)
                body = await asyncio.to_thread(
                    self.client.state, tracked.software, tracked.key
                )
        except MuseNotFoundError as error:
            return Outcome(
                False, message=self._failure_text(tracked, f"{error}", "", "")
            )
        except MuseAuthError as error:
            return Outcome(True, auth_problem=str(error))
        except MuseTransientError as error:
            return self._transient(tracked, str(error))
        tracked.error_since = None
        report = states.parse_state_report(body)
        decision = states.decide(report)
        self._note_state(tracked, report, decision)
        if decision.verdict is states.Verdict.RUNNING:
            tracked.unknown_since = None
            return Outcome(True)
        if decision.verdict is states.Verdict.UNKNOWN:
            return self._unknown(tracked, decision)
        if decision.verdict is states.Verdict.SUCCESS:
            return await asyncio.to_thread(self._collect_success, tracked)
        return await asyncio.to_thread(self._collect_failure, tracked, decision, report)

    def _note_state(
        self, tracked: Tracked, report: states.StateReport, decision: states.Decision
    ) -> None:
        state = f"{report.cr}/{report.latest_cr}/{report.latest_state}"
        if state != tracked.last_state:
            tracked.last_state = state
            self.logger.debug(f"Muse: key {tracked.key} is {state}")
            if decision.warning:
                self.logger.warning(f"Muse: key {tracked.key}: {decision.warning}")

    def _transient(self, tracked: Tracked, problem: str) -> Outcome:
        now = time.monotonic()
        if tracked.error_since is None:
            tracked.error_since = now
        grace = self.workflow.executor_settings.status_error_grace
        waited = now - tracked.error_since
        if waited > grace:
            return Outcome(
                False,
                message=self._failure_text(
                    tracked,
                    f"no usable answer about the job for {waited:.0f} s "
                    f"(--muse-status-error-grace {grace}); last problem: "
                    f"{self.redact(problem)}. The job may still be running on Muse.",
                    "",
                    "",
                ),
            )
        if now - tracked.last_warning >= WARN_EVERY or waited == 0:
            tracked.last_warning = now
            self.logger.warning(
                f"Muse: key {tracked.key} ({tracked.rule}): {self.redact(problem)}; "
                f"still waiting (gives up after {grace} s of errors)."
            )
        return Outcome(True)

    def _unknown(self, tracked: Tracked, decision: states.Decision) -> Outcome:
        now = time.monotonic()
        if tracked.unknown_since is None:
            tracked.unknown_since = now
        grace = self.workflow.executor_settings.unknown_state_grace
        values = ", ".join(decision.unknown)
        if now - tracked.unknown_since > grace:
            return Outcome(
                False,
                message=self._failure_text(
                    tracked,
                    f"the service reported unknown state values ({values}) for "
                    f"more than {grace} s (--muse-unknown-state-grace)",
                    "",
                    "",
                ),
            )
        if now - tracked.last_warning >= WARN_EVERY or tracked.unknown_since == now:
            tracked.last_warning = now
            self.logger.error(
                f"Muse: key {tracked.key} ({tracked.rule}) reports state values "
                f"this plugin does not know: {values}; still watching it."
            )
        return Outcome(True)

    def _adapt_interval(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Short checks while jobs are young, longer for long jobs, capped by
        --seconds-between-status-checks."""
        ceiling = self.workflow.remote_execution_settings.seconds_between_status_checks
        ages = [
            time.monotonic() - tracked.submitted
            for tracked in map(self._tracked, active_jobs)
            if tracked is not None
        ]
        youngest = min(ages) if ages else 0.0
        self.next_seconds_between_status_checks = min(
            ceiling, max(MIN_INTERVAL, youngest / 30.0)
        )

    # -- results --------------------------------------------------------------

    def _collect_success(self, tracked: Tracked) -> Outcome:
        tracked.log_dir.mkdir(parents=True, exist_ok=True)
        archive = tracked.log_dir / "run.zip"
        try:
            self._download_checked(tracked, archive)
            problem = self._result_problem(tracked, archive)
            if problem:
                return self._fail_with_archive(tracked, archive, problem)
            extract_selected(archive, tracked.declared, Path.cwd())
            self._apply_flags(tracked)
        except (MuseError, StagingError, OSError) as error:
            return self._fail_with_archive(tracked, archive, str(error))
        shutil.rmtree(tracked.log_dir, ignore_errors=True)
        return Outcome(False, success=True)

    def _apply_flags(self, tracked: Tracked) -> None:
        """touch() and protected(): Snakemake applies them only to jobs it runs
        itself, so they are applied here, before success is reported."""
        for path in tracked.touched:
            touch_flag(Path.cwd() / path)
        for path in tracked.protected:
            self.logger.info(f"Muse: write-protecting output {path}.")
            write_protect(Path.cwd() / path)

    def _download_checked(self, tracked: Tracked, archive: Path) -> None:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            self.client.download_result(tracked.software, tracked.key, archive)
            try:
                verify_archive(archive)
                return
            except CorruptArchiveError as error:
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
                self.logger.warning(
                    f"Muse: run.zip of key {tracked.key} is corrupt ({error}); "
                    f"downloading it again ({attempt}/{DOWNLOAD_ATTEMPTS})."
                )

    def _result_problem(self, tracked: Tracked, archive: Path) -> str:
        code = read_member_text(archive, ".muse/exit_code").strip()
        if code != "0":
            shown = code or "none recorded"
            return f"the job script's command exit code is {shown}"
        missing = missing_paths(archive, tracked.results)
        if missing:
            return "declared output(s) missing from run.zip: " + ", ".join(missing)
        return ""

    def _fail_with_archive(
        self, tracked: Tracked, archive: Path, problem: str
    ) -> Outcome:
        aux = self._save_logs(tracked, archive) if archive.exists() else []
        message = self._failure_text(
            tracked, problem, tracked.last_state, tail_text(tracked.log_dir / STDERR)
        )
        return Outcome(False, message=message, aux_logs=aux)

    def _collect_failure(
        self, tracked: Tracked, decision: states.Decision, report: states.StateReport
    ) -> Outcome:
        tracked.log_dir.mkdir(parents=True, exist_ok=True)
        content = tracked.log_dir / "content.zip"
        note = ""
        try:
            self.client.download_content(tracked.software, tracked.key, content)
        except MuseError as error:
            note = f" (the job's folder could not be fetched: {error})"
        aux = self._save_logs(tracked, content) if content.exists() else []
        code = ""
        try:
            if content.exists():
                code = read_member_text(content, ".muse/exit_code").strip()
        except StagingError as error:
            note += f" (the job's folder zip is unreadable: {error})"
        reason = decision.reason + (f"; command exit code {code}" if code else "")
        message = self._failure_text(
            tracked,
            reason + note,
            report.latest_state or "",
            tail_text(tracked.log_dir / STDERR),
        )
        return Outcome(False, message=message, aux_logs=aux)

    def _save_logs(self, tracked: Tracked, archive: Path) -> list[str]:
        """Service stdout/stderr into the log folder, the rule's log: files into
        place (never outputs); returns the service files (Snakemake already
        lists the rule's own logs)."""
        saved = []
        try:
            for name in (STDERR, STDOUT):
                if copy_member(archive, name, tracked.log_dir / name):
                    saved.append(str(tracked.log_dir / name))
            if tracked.logs:
                extract_selected(archive, tracked.logs, Path.cwd())
        except (StagingError, OSError) as error:
            self.logger.error(f"Muse: logs of key {tracked.key} not saved: {error}")
        return saved

    def _failure_text(
        self, tracked: Tracked, reason: str, state: str, tail: str
    ) -> str:
        lines = [
            f"Muse job {tracked.key} (rule {tracked.rule}, software "
            f"{tracked.software}) failed: {reason}.",
        ]
        if state:
            lines.append(f"Muse/SLURM state: {state}.")
        lines.append(f"Muse logs: {tracked.log_dir}")
        if tail.strip():
            lines.append("Last lines of the job's stderr:\n" + tail)
        return self.redact("\n".join(lines)) + "\n"

    # -- cancel ---------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Ctrl-C: cancel through the extension where the service offers it
        (bounded by CANCEL_DEADLINE), and say which keys keep running."""
        listed = {t.key: t for t in map(self._tracked, active_jobs) if t is not None}
        tracked_jobs = list({**self._live_jobs(), **listed}.values())
        self._stopping = True
        if not tracked_jobs or not getattr(self, "_ready", False):
            return
        cancellable = [t for t in tracked_jobs if t.can_cancel]
        failed = self._cancel_all(cancellable)
        if failed:
            self.logger.error(
                f"Muse: could not cancel {len(failed)} job(s); cancel them "
                "manually (or wait for them to end):\n" + self._follow_lines(failed)
            )
        uncancellable = [t for t in tracked_jobs if not t.can_cancel]
        if uncancellable:
            self.logger.warning(
                f"Muse: {len(uncancellable)} job(s) keep running on Muse (the "
                "service offers no cancel request); follow them with:\n"
                + self._follow_lines(uncancellable)
            )

    def _follow_lines(self, jobs: list[Tracked]) -> str:
        return "\n".join(
            f"  {t.key} ({t.rule}): GET "
            f"{self.client.url('software', 'muse', 'state', t.software, t.key)}"
            for t in jobs
        )

    def _cancel_all(self, cancellable: list[Tracked]) -> list[Tracked]:
        if not cancellable:
            return []
        failed: list[Tracked] = []
        deadline = time.monotonic() + CANCEL_DEADLINE
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=CANCEL_THREADS)
        futures = {pool.submit(self._cancel_one, t, deadline): t for t in cancellable}
        done, pending = concurrent.futures.wait(futures, timeout=CANCEL_DEADLINE)
        for future in done:
            error = future.exception()
            if error is not None:
                failed.append(futures[future])
                self.logger.error(
                    f"Muse: could not cancel key {futures[future].key}, cancel it "
                    f"manually: {self.redact(error)}"
                )
        for future in pending:
            failed.append(futures[future])
            self.logger.error(
                f"Muse: could not cancel key {futures[future].key} within "
                f"{CANCEL_DEADLINE:.0f} s, cancel it manually."
            )
        pool.shutdown(wait=False, cancel_futures=True)
        cancelled = len(cancellable) - len(failed)
        self.logger.info(f"Muse: cancelled {cancelled} job(s).")
        return failed

    def _cancel_one(self, tracked: Tracked, deadline: float) -> None:
        """One cancel, retried briefly: a failing cancel must not end the
        cleanup of the others, nor hold Ctrl-C for long."""
        for attempt in range(1, CANCEL_ATTEMPTS + 1):
            try:
                self.client.cancel(tracked.software, tracked.key)
                return
            except MuseNotFoundError:
                return  # the service no longer has it: nothing left to stop
            except MuseError:
                if attempt == CANCEL_ATTEMPTS or time.monotonic() + 0.5 > deadline:
                    raise
                time.sleep(0.5)
