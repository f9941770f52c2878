"""The job lifecycle: run folders, submission, the poll loop, result zips.

A run request becomes a run folder ``STATE/runs/<key>/`` holding the catalog's files
of the software, then the uploaded files in ``files_order`` (zips unzipped in place,
every path checked), and ``__WS__batch.sh`` (module loads, then the command). The
folder is handed to a backend; one background thread asks the backend about every
active job in one batched call per cycle and records what it says in the store.
Results are built from the run folder after the job: ``run.zip`` (streamed to a file,
zip64 allowed), the stdout file, or a download key.
"""

import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from . import runner
from .auth import AccessDenied
from .backends.base import Backend, BackendJob
from .catalog import Software, container_tool, service_python_dir
from .sbatch import parse_module_list, parse_sbatch_list
from .store import Download, JobRecord, Store

logger = logging.getLogger(__name__)

RETURNED_TYPES = ("stdout", "stdout.txt", "run.zip")
BATCH_SCRIPT = "__WS__batch.sh"
STDOUT_FILE = "__WS__stdout.txt"
STDERR_FILE = "__WS__stderr.txt"
MODULE_INITS = (
    "/etc/profile.d/modules.sh",
    "/usr/share/modules/init/bash",
    "/usr/share/lmod/lmod/init/bash",
    "/etc/profile.d/lmod.sh",
)


class RequestProblem(Exception):
    """Base of the errors a request can cause; ``more`` says how to go on."""

    def __init__(self, message: str, more: list[str] | None = None) -> None:
        super().__init__(message)
        self.more = more or []


class BadRequest(RequestProblem):
    """The request cannot be run as sent (400)."""


class JobNotFound(RequestProblem):
    """No job or download with this key (404)."""


class NotReady(RequestProblem):
    """Results asked for before the job ended well (409)."""


class TooLarge(RequestProblem):
    """The request body is larger than the service accepts (413)."""


@dataclass(frozen=True)
class RunRequest:
    """The parameters of a run POST, checked."""

    cmd: str = ""
    cmd_option: str = ""
    files_order: list[str] | None = None
    returned_type: str = "stdout"
    todownload: bool = False
    sbatch_list: list[str] = field(default_factory=list)
    module_list: list[str] = field(default_factory=list)

    def echo(self, ordered: list[str], cluster: bool) -> dict[str, Any]:
        """The documented ``report.request`` echo."""
        echoed: dict[str, Any] = {
            "cmd": self.cmd,
            "cmd_option": self.cmd_option,
            "ordered_filename_list": ordered,
            "returned_type": self.returned_type,
            "todownload": self.todownload,
        }
        if cluster:
            echoed["sbatch_list"] = list(self.sbatch_list)
            echoed["module_list"] = list(self.module_list)
        return echoed


@dataclass(frozen=True)
class Upload:
    """One uploaded ``file`` field: its safe name and where to read it."""

    filename: str
    source: BinaryIO


@dataclass(frozen=True)
class Result:
    """What a result request answers: stdout text, a file, or a download key."""

    kind: str  # "stdout", "file" or "download"
    stdout: str = ""
    path: Path | None = None
    filename: str = ""
    media_type: str = ""
    download_key: str = ""


@dataclass(frozen=True)
class PreparedRun:
    """A run folder made ready for its command."""

    key: str
    path: Path
    #: file names in the order they were copied into the folder
    ordered: list[str]
    script: Path


@dataclass(frozen=True)
class SyncOutcome:
    """A finished synchronous run."""

    key: str
    run_path: Path
    ok: bool
    request_echo: dict[str, Any]


def safe_upload_name(raw: str | None) -> str:
    """The basename of an uploaded file's name, refused when unusable."""
    text = (raw or "").replace("\\", "/")
    name = PurePosixPath(text).name
    if not name or name in {".", ".."} or "\0" in name:
        raise BadRequest(
            f"uploaded file name {raw!r} cannot be used",
            ["give every 'file' field a plain file name, e.g. input.zip"],
        )
    return name


class JobManager:
    """Submits jobs, watches them through the backend, and builds their results."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        state_dir: Path,
        poll_interval: float = 0.25,
        sync_timeout: float = 3600.0,
    ) -> None:
        self.store = store
        self.backend = backend
        self.runs_dir = state_dir / "runs"
        self.results_dir = state_dir / "results"
        self.tmp_dir = state_dir / "tmp"
        for folder in (self.runs_dir, self.results_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.poll_interval = poll_interval
        self.sync_timeout = sync_timeout
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._zip_locks: dict[str, threading.Lock] = {}
        self._zip_locks_guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_poll_error = ""

    def start(self) -> None:
        """Start the poll thread; jobs left active by an earlier run are polled too."""
        active = self.store.active_jobs()
        if active:
            logger.info("watching %d jobs left active by an earlier run", len(active))
        self._thread = threading.Thread(
            target=self._poll_loop, name="muse-poll", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; the jobs themselves keep running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.backend.close()

    def submit(
        self, software: Software, owner: str, request: RunRequest, uploads: list[Upload]
    ) -> JobRecord:
        """Prepare a run folder and hand it to the backend; return the new job."""
        options = tuple(parse_sbatch_list(request.sbatch_list))
        with self._prepared_run(software, request, uploads) as run:
            seq = self.store.next_counter("jobname")
            job_name = f"{seq}-ws-{software.name}"
            backend_id = self.backend.submit(
                BackendJob(run.key, job_name, run.path, run.script, options)
            )
        now = time.time()
        record = JobRecord(
            run.key,
            software.name,
            owner,
            seq,
            job_name,
            self.backend.name,
            backend_id,
            "PENDING",
            None,
            "",
            request.echo(run.ordered, cluster=True),
            run.path,
            now,
            now,
            False,
            None,
        )
        self.store.add_job(record)
        logger.info(
            "job %s (%s) submitted for %s as %s %s",
            job_name,
            run.key,
            owner,
            self.backend.name,
            backend_id,
        )
        return record

    def run_sync(
        self, software: Software, request: RunRequest, uploads: list[Upload]
    ) -> SyncOutcome:
        """Run at once on this host and wait for the end (POST software/run)."""
        # Only the preparation is undone on failure: once the command has
        # started, its folder is the record of what happened.
        with self._prepared_run(software, request, uploads) as run:
            pass
        process = runner.spawn(
            ["bash", str(run.script)],
            cwd=run.path,
            stdout_path=run.path / STDOUT_FILE,
            stderr_path=run.path / STDERR_FILE,
        )
        code = self._wait_sync(process, run.path)
        logger.info(
            "synchronous run %s of %s exited with %s", run.key, software.name, code
        )
        return SyncOutcome(
            run.key, run.path, code == 0, request.echo(run.ordered, False)
        )

    @contextmanager
    def _prepared_run(
        self, software: Software, request: RunRequest, uploads: list[Upload]
    ) -> Iterator[PreparedRun]:
        """A new run folder with the uploads and the batch script in it.

        The folder is removed again when anything inside the ``with`` block fails,
        so a refused request leaves nothing behind.
        """
        modules = parse_module_list(request.module_list)
        key = str(uuid.uuid4())
        run_path = self.runs_dir / key
        run_path.mkdir()
        try:
            ordered = prepare_run_folder(
                run_path, software, uploads, request.files_order
            )
            script = write_batch_script(run_path, software, request, modules)
            yield PreparedRun(key, run_path, ordered, script)
        except BaseException:
            shutil.rmtree(run_path, ignore_errors=True)
            raise

    def _wait_sync(
        self, process: subprocess.Popen[bytes], run_path: Path
    ) -> int | None:
        try:
            return process.wait(timeout=self.sync_timeout)
        except subprocess.TimeoutExpired:
            runner.kill_group(process.pid, signal.SIGKILL)
            process.wait()
            with open(run_path / STDERR_FILE, "a") as stderr:
                stderr.write(
                    "muse: the synchronous run took longer than "
                    f"{self.sync_timeout:.0f} s and was killed; use "
                    "POST software/muse/run/ for long jobs\n"
                )
            return None

    def job(self, name: str, key: str) -> JobRecord:
        """The job with this key, which must belong to software ``name``."""
        record = self.store.get_job(key)
        if record is None or record.name != name:
            hint = f"it belongs to software {record.name!r}" if record else ""
            raise JobNotFound(
                f"no job of software {name!r} with key {key!r}",
                [
                    hint
                    or "use the key from the url of the POST software/muse/run/ reply"
                ],
            )
        return record

    def cancel(self, record: JobRecord, username: str) -> JobRecord:
        """Stop the job (the cancel extension); only its owner may."""
        if record.owner != username:
            raise AccessDenied(
                f"job {record.key} belongs to another user; only its owner may "
                "cancel it"
            )
        if not record.terminal:
            self.store.mark_cancel_requested(record.key)
            self.backend.cancel(record.backend_id)
            logger.info("job %s: cancel requested by %s", record.key, username)
            self.poll_once()
        return self.store.get_job(record.key) or record

    def job_result(self, record: JobRecord) -> Result:
        """The result of GET software/muse/run, per the POST's returned_type."""
        if not record.terminal:
            raise NotReady(
                f"job {record.job_name} is still {record.state}: results are not "
                "ready yet",
                ["poll the state URL until cr is OK, then ask again"],
            )
        if not record.succeeded:
            raise NotReady(
                f"job {record.job_name} ended {record.state}"
                f"{_exit_text(record.exit_code)}: it has no results",
                [
                    f"GET /api/software/muse/content/{record.name}/{record.key}/ "
                    "gives the run folder, with __WS__stderr.txt",
                    *([record.reason] if record.reason else []),
                ],
            )
        return self._result(
            record.key, record.run_path, record.request, record.download_key
        )

    def sync_result(self, outcome: SyncOutcome) -> Result:
        return self._result(outcome.key, outcome.run_path, outcome.request_echo, None)

    def _result(
        self, key: str, run_path: Path, echo: dict[str, Any], download_key: str | None
    ) -> Result:
        returned_type = echo["returned_type"]
        if returned_type == "stdout":
            text = (run_path / STDOUT_FILE).read_text(errors="replace")
            return Result("stdout", stdout=text.rstrip("\n"))
        if returned_type == "stdout.txt":
            path, filename, media = run_path / STDOUT_FILE, "stdout.txt", "text/plain"
        else:
            path, filename, media = (
                self.run_zip(key, run_path),
                "run.zip",
                "application/zip",
            )
        if not echo["todownload"]:
            return Result("file", path=path, filename=filename, media_type=media)
        if download_key is None:
            download_key = new_download_key()
            job_key = key if self.store.get_job(key) else None
            self.store.add_download(
                Download(download_key, path, filename, media), job_key
            )
        return Result("download", download_key=download_key)

    def download(self, key: str) -> Download:
        found = self.store.get_download(key)
        if found is None or not found.path.exists():
            raise JobNotFound(
                f"no download with key {key!r}",
                ["use the key from the url of a todownload=yes reply"],
            )
        return found

    def run_zip(self, key: str, run_path: Path) -> Path:
        """``STATE/results/<key>/run.zip``, built once after the job."""
        destination = self.results_dir / key / "run.zip"
        with self._zip_lock(key):
            if not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                zip_folder(run_path, destination, self.tmp_dir)
        return destination

    def content_zip(self, record: JobRecord) -> Path:
        """The run folder zipped as it stands, in a temporary file to remove."""
        destination = self.tmp_dir / f"content-{record.key}-{uuid.uuid4().hex}.zip"
        zip_folder(record.run_path, destination, self.tmp_dir)
        return destination

    def _zip_lock(self, key: str) -> threading.Lock:
        with self._zip_locks_guard:
            return self._zip_locks.setdefault(key, threading.Lock())

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll_once()
            except Exception as exc:  # the loop must outlive any one bad cycle
                message = f"{type(exc).__name__}: {exc}"
                if message != self._last_poll_error:
                    logger.exception("polling the %s backend failed", self.backend.name)
                self._last_poll_error = message

    def poll_once(self) -> None:
        """Ask the backend about every active job at once; record what changed."""
        with self._poll_lock:
            active = self.store.active_jobs()
            if not active:
                return
            by_id = {record.backend_id: record for record in active}
            states = self.backend.poll(list(by_id))
            self._last_poll_error = ""
            for backend_id, record in by_id.items():
                seen = states.get(backend_id)
                if seen is None:
                    continue
                now = (seen.state, seen.exit_code, seen.reason)
                if now != (record.state, record.exit_code, record.reason):
                    self.store.set_state(record.key, *now)
                if seen.state != record.state:
                    logger.info(
                        "job %s: %s -> %s %s",
                        record.job_name,
                        record.state,
                        seen.state,
                        seen.reason,
                    )


def _exit_text(exit_code: int | None) -> str:
    return f" (exit code {exit_code})" if exit_code is not None else ""


def new_download_key() -> str:
    """``YYYYMMDD_HHMMSS_<uuid4>``, as the Muse documentation shows."""
    return f"{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4()}"


def order_uploads(uploads: list[Upload], files_order: list[str] | None) -> list[Upload]:
    """Uploads in ``files_order``; files it does not name follow in upload order."""
    if files_order is None:
        return list(uploads)
    by_name: dict[str, list[Upload]] = {}
    for upload in uploads:
        by_name.setdefault(upload.filename, []).append(upload)
    wanted = [safe_upload_name(name) for name in files_order]
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise BadRequest(
            f"files_order names {missing}, but no 'file' field carries them",
            [f"uploaded files: {sorted(by_name) or 'none'}"],
        )
    ordered: list[Upload] = []
    for name in dict.fromkeys(wanted):
        ordered.extend(by_name.pop(name))
    ordered.extend(upload for upload in uploads if upload.filename in by_name)
    return ordered


def prepare_run_folder(
    run_path: Path,
    software: Software,
    uploads: list[Upload],
    files_order: list[str] | None,
) -> list[str]:
    """Fill a new run folder; return the file names in the order they were treated."""
    for item in software.files:
        if item.is_dir():
            shutil.copytree(item, run_path / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, run_path / item.name)
    ordered = order_uploads(uploads, files_order)
    for upload in ordered:
        target = run_path / upload.filename
        if target.is_symlink():
            target.unlink()
        with open(target, "wb") as out:
            shutil.copyfileobj(upload.source, out, 1 << 20)
        if upload.filename.lower().endswith(".zip"):
            if not zipfile.is_zipfile(target):
                raise BadRequest(
                    f"file {upload.filename!r} is named .zip but is not a zip archive",
                    ["send a valid zip, or a name without .zip to copy it as it is"],
                )
            extract_zip(target, run_path)
    return [upload.filename for upload in ordered]


def write_batch_script(
    run_path: Path, software: Software, request: RunRequest, modules: list[str]
) -> Path:
    """Write ``__WS__batch.sh``: environment, module loads, stdin, the command."""
    lines = [
        "#!/bin/bash",
        f"# batch script of a Muse job of {software.name}, written by muse serve",
        f"cd {shlex.quote(str(run_path))} || exit 1",
    ]
    if software.service_python:
        lines.append(f'export PATH={shlex.quote(str(service_python_dir()))}:"$PATH"')
    lines += module_lines(modules)
    lines.append("if [ -f stdin.txt ]; then exec < stdin.txt; fi")
    lines.append(command_line(run_path, software, request))
    script = run_path / BATCH_SCRIPT
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def module_lines(modules: list[str]) -> list[str]:
    """``module load`` lines, failing clearly where ``module`` does not exist."""
    if not modules:
        return []
    message = (
        f"muse: this job asks for the modules {' '.join(modules)}, but the 'module' "
        "command is not available on this host; remove module_list or run where "
        "environment modules are installed"
    )
    inits = " ".join(MODULE_INITS)
    lines = [
        "if ! type module >/dev/null 2>&1; then",
        f"  for init in {inits}; do",
        '    if [ -r "$init" ]; then . "$init"; break; fi',
        "  done",
        "fi",
        "if ! type module >/dev/null 2>&1; then",
        f"  echo {shlex.quote(message)} >&2",
        "  exit 127",
        "fi",
    ]
    for name in modules:
        quoted = shlex.quote(name)
        failure = shlex.quote(f"muse: 'module load {name}' failed")
        lines.append(f"module load {quoted} || {{ echo {failure} >&2; exit 1; }}")
    return lines


def command_line(run_path: Path, software: Software, request: RunRequest) -> str:
    """The command: through bash on the host, or ``singularity exec`` for an image."""
    if software.on_host:
        return f"bash -c {shlex.quote(request.cmd)}"
    folder = shlex.quote(str(run_path))
    options = request.cmd_option or software.cmd_option
    return (
        f"{container_tool()} exec {options} --bind {folder}:{folder} --pwd {folder} "
        f"{shlex.quote(str(software.image))} {request.cmd}"
    )


class UnsafeArchive(BadRequest):
    """A zip member that would land outside the run folder."""


def extract_zip(archive: Path, destination: Path) -> None:
    """Unzip in place; refuse absolute paths, ``..`` and symlink escapes."""
    root = destination.resolve()
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for member in members:
            _check_member_name(member.filename)
        for member in members:
            _extract_member(zipped, member, root)


def _check_member_name(name: str) -> None:
    text = name.replace("\\", "/")
    parts = PurePosixPath(text).parts
    drive = len(text) > 1 and text[1] == ":"
    if not text or text.startswith("/") or drive or ".." in parts or "\0" in text:
        raise UnsafeArchive(
            f"unsafe path in archive: {name}",
            ["archive members must be relative paths without '..'"],
        )


def _inside(root: Path, path: str) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


def _extract_member(
    zipped: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path
) -> None:
    name = member.filename.replace("\\", "/")
    target = root / name
    # realpath resolves every symlink already on the way, so nothing is written
    # through a link that points out of the run folder
    parent = os.path.realpath(target.parent)
    if not _inside(root, parent):
        raise UnsafeArchive(
            f"unsafe path in archive: {member.filename}",
            ["a symbolic link on the way leads out of the run folder"],
        )
    if name.endswith("/"):
        Path(parent, target.name).mkdir(parents=True, exist_ok=True)
        return
    Path(parent).mkdir(parents=True, exist_ok=True)
    final = Path(parent, target.name)
    if final.is_symlink() or final.is_file():
        final.unlink()
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        _make_link(zipped, member, root, final)
        return
    with zipped.open(member) as source, open(final, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    # keep the permission bits (the x bit matters), never setuid/setgid
    final.chmod(((mode & 0o777) or 0o644) | 0o600)


def _make_link(
    zipped: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path, final: Path
) -> None:
    link = zipped.read(member).decode("utf-8", "replace")
    landing = os.path.normpath(os.path.join(final.parent, link))
    if os.path.isabs(link) or not _inside(root, landing):
        raise UnsafeArchive(
            f"unsafe path in archive: {member.filename}",
            [f"it is a symbolic link to {link}, outside the run folder"],
        )
    os.symlink(link, final)


def zip_folder(folder: Path, destination: Path, tmp_dir: Path) -> None:
    """Zip a folder to a file, streaming; symlinks and empty folders are kept."""
    partial = tmp_dir / f"{destination.name}.{uuid.uuid4().hex}.part"
    with zipfile.ZipFile(
        partial, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=1
    ) as zipped:
        for current, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            base = Path(current)
            relative = base.relative_to(folder)
            if relative.parts and not dirnames and not filenames:
                zipped.writestr(f"{relative.as_posix()}/", b"")
            for name in [d for d in dirnames if (base / d).is_symlink()]:
                dirnames.remove(name)
                _zip_link(zipped, base / name, (relative / name).as_posix())
            for name in sorted(filenames):
                _zip_entry(zipped, base / name, (relative / name).as_posix())
    os.replace(partial, destination)


def _zip_entry(zipped: zipfile.ZipFile, path: Path, arcname: str) -> None:
    try:
        if path.is_symlink():
            _zip_link(zipped, path, arcname)
        elif path.is_file():
            zipped.write(path, arcname)
    except FileNotFoundError:
        # a running job may remove a file between the listing and the read
        logger.debug("%s vanished while zipping", path)


def _zip_link(zipped: zipfile.ZipFile, path: Path, arcname: str) -> None:
    info = zipfile.ZipInfo(arcname, time.localtime(path.lstat().st_mtime)[:6])
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3  # unix, so that readers honour the mode bits
    zipped.writestr(info, os.readlink(path))
