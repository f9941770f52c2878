"""Input zips and safe, atomic extraction (field cases K9, K10, K11, BC-11/12)."""

import os
import stat
import zipfile
from pathlib import Path

import pytest

from snakemake_executor_muse.staging import (
    CorruptArchiveError,
    StagingError,
    UnsafeArchiveError,
    extract_selected,
    missing_paths,
    parse_manifest,
    relative_input_path,
    write_input_zip,
)


def make_zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


FILE = stat.S_IFREG | 0o644
LINK = stat.S_IFLNK | 0o777
DIR = stat.S_IFDIR | 0o755


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "wd"
    folder.mkdir()
    return folder


def test_input_zip_keeps_dirs_empty_folders_and_exec_bits(workdir: Path):
    (workdir / "db" / "index" / "lvl1").mkdir(parents=True)
    (workdir / "db" / "index" / "empty").mkdir()
    (workdir / "db" / "index" / "lvl1" / "k.txt").write_text("k")
    tool = workdir / "bin" / "run.sh"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    target = workdir / "inputs.zip"
    names = write_input_zip(target, ["db/index", "bin/run.sh"], workdir)
    assert "db/index/empty/" in names
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo("bin/run.sh")
        assert (info.external_attr >> 16) & 0o777 == 0o755
        assert archive.read("db/index/lvl1/k.txt") == b"k"


@pytest.mark.parametrize("path", ["../x.txt", "/etc/hosts", "a/../../x"])
def test_inputs_outside_workdir_are_refused(workdir: Path, path: str):
    with pytest.raises(StagingError, match="outside the working directory"):
        relative_input_path(path, workdir)


def test_absolute_input_inside_workdir_is_made_relative(workdir: Path):
    assert relative_input_path(str(workdir / "a" / "b.txt"), workdir) == "a/b.txt"


@pytest.mark.parametrize(
    "entries",
    [
        [("../escape1.txt", b"x", FILE)],
        [("r/../../escape2.txt", b"x", FILE)],
        [("/tmp/escape3.txt", b"x", FILE)],
        [("r/link", b"/etc", LINK), ("r/link/copied.txt", b"x", FILE)],
    ],
)
def test_k10_zip_slip_is_rejected_and_nothing_written(
    workdir: Path, tmp_path: Path, entries
):
    archive = make_zip(tmp_path / "run.zip", [("r/a.txt", b"ok", FILE), *entries])
    before = set(tmp_path.iterdir())
    with pytest.raises(UnsafeArchiveError, match="unsafe path in archive: "):
        extract_selected(archive, ["r/a.txt", "r/link", "r/link/copied.txt"], workdir)
    assert not (workdir / "r").exists()
    assert set(tmp_path.iterdir()) == before
    assert not Path("/tmp/escape3.txt").exists()


def test_selected_symlink_escaping_is_rejected(workdir: Path, tmp_path: Path):
    archive = make_zip(tmp_path / "run.zip", [("o/link", b"../../outside", LINK)])
    with pytest.raises(UnsafeArchiveError, match="unsafe path in archive: o/link"):
        extract_selected(archive, ["o/link"], workdir)


def test_k15_relative_symlink_kept_and_setuid_dropped(workdir: Path, tmp_path: Path):
    archive = make_zip(
        tmp_path / "run.zip",
        [
            ("bin/run.sh", b"#!/bin/sh\necho hi\n", stat.S_IFREG | 0o4755),
            ("bin/latest", b"run.sh", LINK),
        ],
    )
    extract_selected(archive, ["bin/run.sh", "bin/latest"], workdir)
    assert stat.S_IMODE((workdir / "bin/run.sh").stat().st_mode) == 0o755
    assert os.readlink(workdir / "bin/latest") == "run.sh"
    assert (workdir / "bin/latest").read_text().endswith("echo hi\n")


def test_only_declared_members_are_extracted(workdir: Path, tmp_path: Path):
    archive = make_zip(
        tmp_path / "run.zip",
        [
            ("in/data.txt", b"input", FILE),
            (".snakemake/log/x", b"remote", FILE),
            ("db/index/", b"", DIR),
            ("db/index/empty/", b"", DIR),
            ("db/index/lvl1/lvl2/k.txt", b"k", FILE),
            ("logs/a.log", b"log", FILE),
            ("other.txt", b"not declared", FILE),
        ],
    )
    placed = extract_selected(archive, ["db/index", "logs/a.log", "gone.txt"], workdir)
    assert placed == ["db/index", "logs/a.log"]
    assert (workdir / "db/index/empty").is_dir()
    assert (workdir / "db/index/lvl1/lvl2/k.txt").read_text() == "k"
    assert not (workdir / "in").exists()
    assert not (workdir / "other.txt").exists()
    assert not (workdir / ".snakemake" / "log").exists()


def test_extracted_outputs_are_newer_than_inputs(workdir: Path, tmp_path: Path):
    source = workdir / "in.txt"
    source.write_text("in")
    os.utime(source, (1_000_000, 1_000_000))
    archive = make_zip(tmp_path / "run.zip", [("out.txt", b"out", FILE)])
    extract_selected(archive, ["out.txt"], workdir)
    assert (workdir / "out.txt").stat().st_mtime > source.stat().st_mtime


def test_bad_crc_fails_and_leaves_no_partial_output(workdir: Path, tmp_path: Path):
    archive = make_zip(tmp_path / "run.zip", [("out/big.copy", b"A" * 5000, FILE)])
    raw = bytearray(archive.read_bytes())
    position = raw.find(b"A" * 100)
    raw[position + 10] = ord("B")
    archive.write_bytes(bytes(raw))
    with pytest.raises(CorruptArchiveError, match="out/big.copy"):
        extract_selected(archive, ["out/big.copy"], workdir)
    assert not (workdir / "out" / "big.copy").exists()


def test_truncated_archive_is_corrupt(workdir: Path, tmp_path: Path):
    archive = make_zip(tmp_path / "run.zip", [("a.txt", b"x" * 1000, FILE)])
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(CorruptArchiveError, match="not a valid zip"):
        extract_selected(archive, ["a.txt"], workdir)


def test_existing_output_replaced_atomically(workdir: Path, tmp_path: Path):
    (workdir / "d").mkdir()
    (workdir / "d" / "old.txt").write_text("old")
    archive = make_zip(tmp_path / "run.zip", [("d/new.txt", b"new", FILE)])
    extract_selected(archive, ["d"], workdir)
    assert sorted(p.name for p in (workdir / "d").iterdir()) == ["new.txt"]
    assert not any((workdir / ".snakemake" / "muse" / "tmp").iterdir())


def test_missing_paths_and_manifest(tmp_path: Path):
    archive = make_zip(tmp_path / "run.zip", [("a.txt", b"", FILE), ("d/x", b"", FILE)])
    assert missing_paths(archive, ["a.txt", "d", "b.txt"]) == ["b.txt"]
    assert parse_manifest("f\ta.txt\n-\tb.txt\nd\td\n") == {
        "a.txt": "f",
        "b.txt": "-",
        "d": "d",
    }
