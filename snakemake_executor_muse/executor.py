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
    RequestError,
    build_shell_request,
    choose_software,
    declared_files,
    layout_sources,
    module_list,
    required_mode,
    usable_sources,
    wildcards_folder,
    wildcards_of,
)
from snakemake_executor_muse.staging import (
    CorruptArchiveError,
    StagingError,
    copy_member,
    extract_selected,
    missing_paths,
    read_member_text,
    tail_text,
)

MUSE_DIR = Path(".snakemake") / "muse"
STDOUT = "__WS__stdout.txt"
STDERR = "__WS__stderr.txt"
DOWNLOAD_ATTEMPTS = 3
CANCEL_DEADLINE = 15.0
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

    @property
    def results(self) -> list[str]:
        """Outputs and benchmark: what must come back for a success."""
        return [*self.outputs, *([self.benchmark] if self.benchmark else [])]

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


class Executor(RemoteExecutor):
    """Runs each Snakemake job as one Muse job."""

    def __post_init__(self) -> None:
        self._ready = False
        self._service: Any = None
        self._sources: list[str] | None = None
        self._seen_keys: set[str] = set()
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

            self._service = embedded.start(Path.cwd(), settings.local_catalog)
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

    def _submit(self, job: Any) -> None:
        self._check_mode(job)
        settings = self.workflow.executor_settings
        software = choose_software(
            job,
            settings.software,
            self._service is not None and self._service.any_software,
        )
        self._say_fallback(software, settings.software)
        if self._reattach(job, software):
            return
        request = build_shell_request(
            job,
            software,
            self._workflow_sources(),
            module_list(job, self._use_envmodules()),
            MUSE_DIR / "uploads",
        )
        for warning in request.sbatch.warnings:
            self.logger.warning(warning)
        try:
            submission = self.client.submit(software, request.fields, request.files)
        finally:
            request.cleanup()
        tracked = self._track(job, software, submission.key, submission.can_cancel)
        self.logger.info(
            f"Muse: rule {tracked.rule} ({self._wildcards_text(job)}) submitted as "
            f"key {tracked.key} to {software} "
            f"[{' '.join(request.sbatch.options)}]; logs in {tracked.log_dir}"
        )
        self.report_job_submission(
            SubmittedJobInfo(job, external_jobid=tracked.key, aux={"muse": tracked})
        )

    def _check_mode(self, job: Any) -> None:
        mode = required_mode(job)
        setting = self.workflow.executor_settings.mode
        if mode == "group":
            names = ", ".join(sorted(set(job.rules)))
            raise RequestError(
                f"Group job {job.name} (rules {names}): group jobs are not "
                "supported by the Muse executor yet. Remove the group: directive "
                "or --groups for these rules."
            )
        if mode != "shell" or setting == "snakemake":
            what = (
                f"a {mode}: rule" if mode != "shell" else "set to --muse-mode snakemake"
            )
            raise RequestError(
                f"Rule {job.rule.name} is {what} and needs snakemake mode (a Muse "
                "software with Python and Snakemake, --muse-snakemake-software), "
                "which this version of the plugin does not provide yet. Write the "
                "rule with shell:, or run it on this machine with "
                f"'localrules: {job.rule.name}'."
            )

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
            self.logger.warning(f"Muse: not reattaching {job.rule.name}: {error}")
            return False
        if not key or key in self._seen_keys:
            return False
        try:
            self.client.state(software, key)
        except MuseError as error:
            self.logger.info(f"Muse: previous key {key} not followed ({error}).")
            return False
        tracked = self._track(job, software, key, can_cancel=False)
        self.logger.info(
            f"Muse: rule {tracked.rule} ({self._wildcards_text(job)}) reattached to "
            f"key {key} from a previous run; logs in {tracked.log_dir}"
        )
        self.report_job_submission(
            SubmittedJobInfo(job, external_jobid=key, aux={"muse": tracked})
        )
        return True

    def _track(self, job: Any, software: str, key: str, can_cancel: bool) -> Tracked:
        self._seen_keys.add(key)
        outputs, logs, benchmark = declared_files(job)
        log_dir = (
            MUSE_DIR
            / "logs"
            / job.rule.name
            / wildcards_folder(wildcards_of(job))
            / key
        )
        return Tracked(
            software, key, job.rule.name, log_dir, outputs, logs, benchmark, can_cancel
        )

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
            elif outcome.success:
                self.report_job_success(job_info)
            else:
                self.report_job_error(
                    job_info, msg=outcome.message, aux_logs=outcome.aux_logs
                )
        self._adapt_interval(active_jobs)

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
                body = await asyncio.to_thread(
                    self.client.state, tracked.software, tracked.key
                )
        except MuseNotFoundError as error:
            return Outcome(
                False, message=self._failure_text(tracked, f"{error}", "", "")
            )
        except MuseAuthError as error:
            return self._transient(tracked, f"authentication expired: {error}")
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
        except (MuseError, StagingError, OSError) as error:
            return self._fail_with_archive(tracked, archive, str(error))
        shutil.rmtree(tracked.log_dir, ignore_errors=True)
        return Outcome(False, success=True)

    def _download_checked(self, tracked: Tracked, archive: Path) -> None:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            self.client.download_result(tracked.software, tracked.key, archive)
            try:
                missing_paths(archive, [])
                read_member_text(archive, ".muse/exit_code")
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
        tracked_jobs = [t for t in map(self._tracked, active_jobs) if t is not None]
        if not tracked_jobs or not getattr(self, "_ready", False):
            return
        cancellable = [t for t in tracked_jobs if t.can_cancel]
        failed = self._cancel_all(cancellable)
        remaining = [t for t in tracked_jobs if not t.can_cancel] + failed
        if remaining:
            keys = "\n".join(
                f"  {t.key} ({t.rule}): GET "
                f"{self.client.url('software', 'muse', 'state', t.software, t.key)}"
                for t in remaining
            )
            self.logger.warning(
                f"Muse: {len(remaining)} job(s) keep running on Muse (the API has "
                f"no cancel request for them); follow them with:\n{keys}"
            )

    def _cancel_all(self, cancellable: list[Tracked]) -> list[Tracked]:
        if not cancellable:
            return []
        failed: list[Tracked] = []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        futures = {
            pool.submit(self.client.cancel, t.software, t.key): t for t in cancellable
        }
        done, pending = concurrent.futures.wait(futures, timeout=CANCEL_DEADLINE)
        for future in done:
            if future.exception() is not None:
                failed.append(futures[future])
                self.logger.error(
                    f"Muse: cancelling key {futures[future].key} failed: "
                    f"{self.redact(future.exception())}"
                )
        failed += [futures[f] for f in pending]
        pool.shutdown(wait=False, cancel_futures=True)
        cancelled = len(cancellable) - len(failed)
        self.logger.info(f"Muse: cancelled {cancelled} job(s).")
        return failed
