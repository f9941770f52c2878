"""Files in and out of a Muse job: the input zip, and safe, atomic extraction.

Going out, ``write_input_zip`` streams the declared inputs (files, and directories
recursively with their empty folders) and the workflow sources into one zip at
their workflow-relative paths, keeping the mode bits (so exec bits survive).

Coming back, ``extract_selected`` takes only the members it is told to (a job's
declared outputs, logs and benchmark), never the uploaded inputs or a remote
``.snakemake/``. Every member name is checked first; an archive holding an
absolute name, a ``..`` component, or a member below a symlink member is rejected
with "unsafe path in archive: NAME", and so is a selected symlink that points
outside the working directory. Symlinks that stay inside are kept as relative
links, never followed. Modes are kept without setuid/setgid/sticky bits. The
selection is extracted into a temporary folder on the same filesystem and only
moved into place (``os.replace``) once every member was read, which also checks
each member's CRC. Extracted files get the current time as mtime, so they are
newer than the inputs they were made from.
"""

import os
import posixpath
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

COPY_CHUNK = 1 << 20
SKIPPED_TOP_LEVEL = (".snakemake",)


class StagingError(Exception):
    """A file cannot be staged in or out."""


class UnsafeArchiveError(StagingError):
    """An archive member would land outside the working directory."""


class CorruptArchiveError(StagingError):
    """The archive is not a valid zip, or a member fails its CRC check."""


def relative_input_path(path: str, workdir: Path) -> str:
    """A workflow-relative POSIX path, or StagingError for anything outside."""
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            candidate = candidate.resolve().relative_to(workdir.resolve())
        except ValueError:
            raise StagingError(
                f"Input {path} is outside the working directory {workdir}: Muse "
                "jobs only see files below it. Move or link the file into the "
                "working directory, or declare it relative to it."
            ) from None
    text = posixpath.normpath(candidate.as_posix())
    if text == ".." or text.startswith("../"):
        raise StagingError(
            f"Input {path} is outside the working directory {workdir} ('..'): Muse "
            "jobs only see files below it. Move the file into the working "
            "directory."
        )
    return text


def write_input_zip(
    destination: Path, paths: Iterable[str], workdir: Path
) -> list[str]:
    """Write ``destination`` (streamed); return the member names written."""
    names: list[str] = []
    seen: set[str] = set()
    with zipfile.ZipFile(
        destination,
        "w",
        compression=zipfile.ZIP_DEFLATED,
        compresslevel=1,
        allowZip64=True,
    ) as archive:
        for path in paths:
            relative = relative_input_path(path, workdir)
            source = workdir / relative
            if not os.path.lexists(source):
                raise StagingError(
                    f"Input {relative} does not exist in {workdir}; it cannot be "
                    "uploaded."
                )
            for member in _walk(source, relative):
                if member[1] in seen:
                    continue
                seen.add(member[1])
                _add_member(archive, *member)
                names.append(member[1])
    return names


def _walk(source: Path, relative: str) -> Iterable[tuple[Path, str]]:
    if not source.is_dir():
        yield source, relative
        return
    yield source, relative + "/"
    for root, dirs, files in os.walk(source, followlinks=True):
        base = Path(root)
        rel_root = posixpath.join(relative, base.relative_to(source).as_posix())
        rel_root = posixpath.normpath(rel_root)
        for name in sorted(dirs):
            yield base / name, f"{rel_root}/{name}/"
        for name in sorted(files):
            yield base / name, f"{rel_root}/{name}"


def _add_member(archive: zipfile.ZipFile, source: Path, name: str) -> None:
    if name.endswith("/"):
        info = zipfile.ZipInfo(name, time.localtime(source.stat().st_mtime)[:6])
        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
        archive.writestr(info, b"")
        return
    # ZipFile.write streams the file in chunks and keeps its mode bits.
    archive.write(source, name)


# -- extraction ---------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One archive member, with what its header says it is."""

    info: zipfile.ZipInfo
    name: str

    @property
    def mode(self) -> int:
        return (self.info.external_attr >> 16) & 0xFFFF

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_dir(self) -> bool:
        return self.info.is_dir() or stat.S_ISDIR(self.mode)


def open_archive(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CorruptArchiveError(f"{path.name} is not a valid zip: {error}") from None


def checked_members(archive: zipfile.ZipFile) -> list[Member]:
    """Every member, after the name checks (raises UnsafeArchiveError)."""
    members = [Member(info, _safe_name(info.filename)) for info in archive.infolist()]
    links = {m.name.rstrip("/") for m in members if m.is_symlink}
    for member in members:
        parts = member.name.rstrip("/").split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                raise UnsafeArchiveError(
                    f"unsafe path in archive: {member.info.filename}"
                )
    return members


def _safe_name(name: str) -> str:
    unsafe = (
        not name
        or "\x00" in name
        or "\\" in name
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")
        or ".." in name.split("/")
    )
    if unsafe:
        raise UnsafeArchiveError(f"unsafe path in archive: {name}")
    return posixpath.normpath(name) + ("/" if name.endswith("/") else "")


def select_members(members: Sequence[Member], declared: Iterable[str]) -> list[Member]:
    """Members equal to a declared path or below a declared directory."""
    wanted = [posixpath.normpath(p) for p in declared]
    chosen = []
    for member in members:
        name = member.name.rstrip("/")
        if name.split("/")[0] in SKIPPED_TOP_LEVEL:
            continue
        if any(name == path or name.startswith(path + "/") for path in wanted):
            chosen.append(member)
    return chosen


def _link_target(archive: zipfile.ZipFile, member: Member) -> str:
    target = archive.read(member.info).decode("utf-8", "surrogateescape")
    resolved = posixpath.normpath(
        posixpath.join(posixpath.dirname(member.name.rstrip("/")), target)
    )
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"unsafe path in archive: {member.info.filename} (symlink to {target})"
        )
    return target


def extract_selected(
    archive_path: Path, declared: Sequence[str], workdir: Path
) -> list[str]:
    """Extract the declared paths atomically; return the paths now in place."""
    with open_archive(archive_path) as archive:
        members = checked_members(archive)
        chosen = select_members(members, declared)
        staging = Path(tempfile.mkdtemp(prefix="extract-", dir=_staging_root(workdir)))
        try:
            for member in chosen:
                _extract_one(archive, member, staging)
            present = [p for p in declared if os.path.lexists(staging / p)]
            _touch_tree(staging, present)
            for path in present:
                _move_into_place(staging / path, workdir / path)
            return present
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _staging_root(workdir: Path) -> Path:
    root = workdir / ".snakemake" / "muse" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _extract_one(archive: zipfile.ZipFile, member: Member, staging: Path) -> None:
    target = staging / member.name.rstrip("/")
    if member.is_dir:
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if member.is_symlink:
        os.symlink(_link_target(archive, member), target)
        return
    try:
        with archive.open(member.info) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, COPY_CHUNK)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise CorruptArchiveError(
            f"archive member {member.name} is corrupt: {error}"
        ) from None
    mode = member.mode & 0o777  # never setuid, setgid or sticky
    os.chmod(target, mode or 0o644)


def _touch_tree(staging: Path, paths: Iterable[str]) -> None:
    now = time.time()
    for path in paths:
        top = staging / path
        if top.is_dir() and not top.is_symlink():
            for root, dirs, files in os.walk(top):
                for name in dirs + files:
                    _utime(Path(root) / name, now)
        _utime(top, now)


def _utime(path: Path, when: float) -> None:
    if path.is_symlink():
        os.utime(path, (when, when), follow_symlinks=False)
    else:
        os.utime(path, (when, when))


def _move_into_place(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.is_dir() and not destination.is_symlink():
        shutil.rmtree(destination)
    os.replace(source, destination)


def touch_flag(path: Path) -> None:
    """Create or touch a ``touch()`` output once its job succeeded.

    Snakemake touches these only for jobs it runs itself; for a remote job with
    no shared file system it just checks that they exist, so the plugin does it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    _utime(path, time.time())


def write_protect(path: Path) -> None:
    """Remove the write bits of a ``protected()`` output, a directory's content
    first (Snakemake's own rule, which it applies only to jobs it runs itself)."""
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path, topdown=False):
            for name in dirs + files:
                _drop_write_bits(Path(root) / name)
    _drop_write_bits(path)


def _drop_write_bits(path: Path) -> None:
    if path.is_symlink():
        return  # a link has no mode of its own on Linux
    mode = path.stat().st_mode
    os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def verify_archive(archive_path: Path) -> None:
    """Read every member once (CRC check) and check the names; a short, cut or
    corrupt download raises CorruptArchiveError, an unsafe name
    UnsafeArchiveError."""
    with open_archive(archive_path) as archive:
        checked_members(archive)
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
            raise CorruptArchiveError(
                f"{archive_path.name} cannot be read: {error}"
            ) from None
    if bad is not None:
        raise CorruptArchiveError(
            f"{archive_path.name}: member {bad} fails its CRC check"
        )


def read_member_text(archive_path: Path, name: str, limit: int = 1 << 20) -> str:
    """A small member as text ('' when absent); for exit codes and manifests."""
    with open_archive(archive_path) as archive:
        try:
            info = archive.getinfo(name)
        except KeyError:
            return ""
        with archive.open(info) as handle:
            return handle.read(limit).decode("utf-8", "replace")


def copy_member(archive_path: Path, name: str, destination: Path) -> bool:
    """Copy one member to a file of ours (service stdout/stderr); False if absent."""
    with open_archive(archive_path) as archive:
        try:
            info = archive.getinfo(name)
        except KeyError:
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, open(destination, "wb") as sink:
            shutil.copyfileobj(source, sink, COPY_CHUNK)
    return True


def parse_manifest(text: str) -> dict[str, str]:
    """``.muse/manifest.tsv`` lines ``KIND<TAB>PATH`` -> {path: kind}."""
    entries = {}
    for line in text.splitlines():
        kind, sep, path = line.partition("\t")
        if sep and path:
            entries[path] = kind
    return entries


def missing_paths(archive_path: Path, paths: Iterable[str]) -> list[str]:
    """Declared paths with no member equal to them or below them."""
    with open_archive(archive_path) as archive:
        names = {m.name.rstrip("/") for m in checked_members(archive)}
    missing = []
    for path in paths:
        wanted = posixpath.normpath(path)
        prefix = wanted + "/"
        if wanted not in names and not any(n.startswith(prefix) for n in names):
            missing.append(path)
    return missing


def tail_text(path: Path, lines: int = 20) -> str:
    """The last lines of a text file ('' when absent)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 32768))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
