"""Zips: unsafe members refused (zip slip), modes and links kept, run.zip shape."""

import io
import os
import stat
import zipfile

import pytest
from muse_service_helpers import key_of, wait_state

from snakemake_executor_muse.service.jobs import (
    UnsafeArchive,
    extract_zip,
    zip_folder,
)


def make_zip(entries):
    """entries: (name, bytes) for files, (name, "->target") for symbolic links."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in entries:
            if isinstance(data, str) and data.startswith("->"):
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zipped.writestr(info, data[2:])
            else:
                zipped.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("entries", "bad"),
    [
        ([("ok.txt", b"a"), ("../escape1.txt", b"x")], "../escape1.txt"),
        ([("r/../../escape2.txt", b"x")], "r/../../escape2.txt"),
        ([("/tmp/escape3.txt", b"x")], "/tmp/escape3.txt"),
        ([("r/link", "->/etc"), ("r/link/copied.txt", b"x")], "r/link"),
        ([("r/up", "->../.."), ("r/up/x.txt", b"x")], "r/up"),
        ([("C:/windows.txt", b"x")], "C:/windows.txt"),
    ],
)
def test_zip_slip_is_refused_through_the_api(client, token, tmp_path, entries, bad):
    reply = client.post(
        "/api/software/muse/run/bash/",
        data={"jwt": token, "cmd": "true"},
        files=[("file", ("inputs.zip", make_zip(entries), "application/zip"))],
    )
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["type"] == "bad_request"
    assert body["error"] == f"unsafe path in archive: {bad}"
    state_dir = tmp_path / "state"
    assert not list((state_dir / "runs").iterdir()), "the refused run folder is kept"
    assert not (tmp_path / "escape1.txt").exists()
    assert not (state_dir / "escape2.txt").exists()


def test_a_link_inside_the_folder_cannot_be_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "sneaky")
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip([("sneaky/x.txt", b"x")]))
    with pytest.raises(UnsafeArchive, match="unsafe path in archive: sneaky/x.txt"):
        extract_zip(archive, run)
    assert not (outside / "x.txt").exists()


def test_modes_links_and_empty_folders_survive_a_round_trip(tmp_path):
    source = tmp_path / "source"
    (source / "bin").mkdir(parents=True)
    (source / "db" / "empty").mkdir(parents=True)
    tool = source / "bin" / "run.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o4755)
    os.symlink("run.sh", source / "bin" / "latest")
    archive = tmp_path / "out.zip"
    zip_folder(source, archive, tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    extract_zip(archive, target)
    extracted = target / "bin" / "run.sh"
    assert stat.S_IMODE(extracted.stat().st_mode) == 0o755, "setuid must be dropped"
    assert os.readlink(target / "bin" / "latest") == "run.sh"
    assert (target / "db" / "empty").is_dir()


def test_zip_upload_is_unzipped_in_place_and_a_later_file_overwrites(client, token):
    archive = make_zip([("data/a.txt", b"from zip\n"), ("b.txt", b"zip b\n")])
    files = [
        ("file", ("inputs.zip", archive, "application/zip")),
        ("file", ("b.txt", b"plain b\n", "text/plain")),
    ]
    reply = client.post(
        "/api/software/muse/run/bash/",
        data={"jwt": token, "cmd": "cat data/a.txt b.txt", "returned_type": "stdout"},
        files=files,
    )
    key = key_of(reply.json())
    wait_state(client, "bash", key)
    result = client.get(f"/api/software/muse/run/bash/{key}/").json()
    assert result["info"]["stdout"] == "from zip\nplain b"


def test_file_field_names_are_reduced_to_a_basename(client, token, tmp_path):
    reply = client.post(
        "/api/software/muse/run/bash/",
        data={"jwt": token, "cmd": "ls", "returned_type": "stdout"},
        files=[("file", ("../../evil.txt", b"x", "text/plain"))],
    )
    key = key_of(reply.json())
    wait_state(client, "bash", key)
    listing = client.get(f"/api/software/muse/run/bash/{key}/").json()["info"]
    assert "evil.txt" in listing["stdout"].split()
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "state" / "evil.txt").exists()


def test_a_zip_name_without_a_zip_inside_is_400(client, token):
    reply = client.post(
        "/api/software/muse/run/bash/",
        data={"jwt": token, "cmd": "true"},
        files=[("file", ("inputs.zip", b"not a zip", "application/zip"))],
    )
    assert reply.status_code == 400
    assert "not a zip archive" in reply.json()["error"]
