"""Auth, catalog and store parts on their own."""

import os
import stat
import time

import jwt as pyjwt
import pytest

from snakemake_executor_muse.service.auth import (
    AuthenticationFailed,
    TokenIssuer,
    UserDirectory,
    UsersFileError,
    check_password,
    hash_password,
    load_or_create_secret,
)
from snakemake_executor_muse.service.catalog import Catalog, CatalogError
from snakemake_executor_muse.service.store import JobRecord, Store


class TestPasswords:
    def test_hash_carries_scheme_rounds_and_salt(self):
        first, second = hash_password("pw", 1000), hash_password("pw", 1000)
        assert first != second, "each hash has its own salt"
        scheme, rounds, salt, _ = first.split("$")
        assert (scheme, rounds) == ("pbkdf2_sha256", "1000") and salt
        assert check_password("pw", first) and check_password("pw", second)
        assert not check_password("wrong", first)
        assert not check_password("pw", "md5$1$x$y")


class TestTokens:
    def test_secret_is_kept_with_mode_0600(self, tmp_path):
        secret = load_or_create_secret(tmp_path)
        assert load_or_create_secret(tmp_path) == secret
        mode = stat.S_IMODE((tmp_path / "jwt_secret").stat().st_mode)
        assert mode == 0o600

    def test_issue_verify_and_expiry(self, tmp_path):
        issuer = TokenIssuer(load_or_create_secret(tmp_path), 60)
        info = issuer.verify(issuer.issue("alice"))
        assert info.username == "alice"
        assert info.expires >= time.time() + 55
        claims = pyjwt.decode(issuer.issue("a"), options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 60
        expired = TokenIssuer(load_or_create_secret(tmp_path), -1).issue("alice")
        with pytest.raises(AuthenticationFailed, match="expired"):
            issuer.verify(expired)
        foreign = pyjwt.encode({"sub": "a", "exp": 2**40}, "k" * 32, algorithm="HS256")
        with pytest.raises(AuthenticationFailed, match="not valid"):
            issuer.verify(foreign)

    def test_errors_never_carry_the_token(self, tmp_path):
        issuer = TokenIssuer(load_or_create_secret(tmp_path), -1)
        token = issuer.issue("alice")
        with pytest.raises(AuthenticationFailed) as caught:
            issuer.verify(token)
        assert token not in str(caught.value) and token not in repr(caught.value)


class TestUsers:
    def test_bad_users_file_names_the_problem(self, tmp_path):
        path = tmp_path / "users.yaml"
        path.write_text("users:\n  alice: {softwares: ['*']}\n")
        with pytest.raises(UsersFileError, match="'alice' needs a 'password_hash'"):
            UserDirectory(path)

    def test_users_file_is_reread_when_it_changes(self, tmp_path):
        path = tmp_path / "users.yaml"
        path.write_text(f"users:\n  a: {{password_hash: '{hash_password('1', 10)}'}}\n")
        users = UserDirectory(path)
        assert users.authenticate("a", "1").name == "a"
        assert not users.authenticate("a", "1").may_run("bwa")
        path.write_text(
            f"users:\n  b: {{password_hash: '{hash_password('2', 10)}', "
            "softwares: [bwa]}\n"
        )
        later = time.time() + 5
        os.utime(path, (later, later))
        assert users.authenticate("b", "2").may_run("bwa")
        with pytest.raises(AuthenticationFailed):
            users.authenticate("a", "1")


class TestCatalog:
    def test_default_catalog(self):
        catalog = Catalog.load(None)
        for name in ("bwa", "samtools", "bcftools", "python", "bash", "snakemake"):
            assert catalog.get(name).on_host
        assert catalog.get("snakemake").service_python

    def test_image_software_and_relative_files(self, tmp_path):
        (tmp_path / "tool.sif").write_bytes(b"")
        (tmp_path / "extra.txt").write_text("x")
        (tmp_path / "c.yaml").write_text(
            "softwares:\n  tool:\n    image: tool.sif\n    type: singularity\n"
            "    cmd_option: --cleanenv\n    files: [extra.txt]\n"
        )
        tool = Catalog.load(tmp_path / "c.yaml").get("tool")
        assert tool.image == tmp_path / "tool.sif"
        assert tool.cmd_option == "--cleanenv"
        assert tool.files == (tmp_path / "extra.txt",)

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            ("{type: docker, image: 'alpine:3'}", "never pulls images"),
            ("{image: missing.sif}", "does not exist"),
            ("{type: podman, image: x}", "expected 'singularity'"),
            ("{type: singularity}", "needs 'image: FILE.sif'"),
        ],
    )
    def test_unusable_entries_stop_loading(self, tmp_path, entry, message):
        (tmp_path / "c.yaml").write_text(f"softwares:\n  tool: {entry}\n")
        with pytest.raises(CatalogError, match=message):
            Catalog.load(tmp_path / "c.yaml")


def test_store_survives_reopening(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    assert [store.next_counter("jobname") for _ in range(3)] == [1, 2, 3]
    record = JobRecord(
        "k", "bash", "alice", 3, "3-ws-bash", "local", "k", "RUNNING", None, "",
        {"cmd": "true"}, tmp_path, 1.0, 1.0, False, None,
    )  # fmt: skip
    store.add_job(record)
    store.set_state("k", "COMPLETED", 0, "")
    store.set_state("k", "RUNNING", None, "")  # an ended job never changes again
    store.close()
    reopened = Store(tmp_path / "db.sqlite3")
    assert reopened.next_counter("jobname") == 4
    again = reopened.get_job("k")
    assert again is not None and again.state == "COMPLETED" and again.succeeded
    assert reopened.active_jobs() == []


def test_image_command_line_binds_the_run_folder(tmp_path):
    from snakemake_executor_muse.service.catalog import Software
    from snakemake_executor_muse.service.jobs import RunRequest, command_line

    tool = Software("tool", image=tmp_path / "tool.sif", cmd_option="--cleanenv")
    line = command_line(tmp_path, tool, RunRequest(cmd="python /add.py 4 5"))
    folder = str(tmp_path)
    assert line.split()[1:] == [
        "exec", "--cleanenv", "--bind", f"{folder}:{folder}", "--pwd", folder,
        f"{folder}/tool.sif", "python", "/add.py", "4", "5",
    ]  # fmt: skip
    assert line.split()[0] in {"singularity", "apptainer"}
    given = command_line(tmp_path, tool, RunRequest(cmd="x", cmd_option="--nv"))
    assert " --nv " in given and "--cleanenv" not in given
