"""The HTTP API of `muse serve` through starlette's TestClient: every endpoint, the
documented examples A to F, the request encodings and the error shapes."""

import io
import json
import zipfile

import pytest
from muse_service_helpers import key_of, obtain_token, submit, wait_state

ERROR_KEYS = {"error", "more", "type"}


def assert_error(reply, status, kind):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == ERROR_KEYS
    assert body["type"] == kind
    assert isinstance(body["more"], list)
    assert body["error"]
    return body


def run_example(client, token, mode, fields, files=None):
    """POST a run (sync: software/run, muse: software/muse/run, then wait and GET)."""
    data = {"jwt": token, **fields}
    if mode == "sync":
        if files is None:
            return client.post("/api/software/run/sw_example/", json=data)
        return client.post("/api/software/run/sw_example/", data=data, files=files)
    if files is None:
        reply = client.post("/api/software/muse/run/sw_example/", json=data)
    else:
        reply = client.post(
            "/api/software/muse/run/sw_example/", data=data, files=files
        )
    assert reply.status_code == 200, reply.text
    key = key_of(reply.json())
    state = wait_state(client, "sw_example", key)
    assert state["info"]["report"]["cr"] == "OK", state
    return client.get(f"/api/software/muse/run/sw_example/{key}/")


class TestAuth:
    def test_obtain_with_json_and_form_then_verify(self, client):
        from_json = obtain_token(client)
        form = client.post(
            "/api/jwt/obtain", data={"username": "alice", "password": "alice-pw"}
        )
        assert form.status_code == 200
        for token in (from_json, form.json()["token"]):
            verified = client.post("/api/jwt/verify/", json={"jwt": token})
            assert verified.status_code == 200
            assert verified.json()["valid"] is True
            assert verified.json()["username"] == "alice"
            assert verified.json()["expires"] > 0

    def test_wrong_password_is_401(self, client):
        reply = client.post(
            "/api/jwt/obtain/", json={"username": "alice", "password": "nope"}
        )
        body = assert_error(reply, 401, "authentication")
        assert "nope" not in json.dumps(body)

    def test_unknown_user_is_401(self, client):
        reply = client.post("/api/jwt/obtain/", json={"username": "x", "password": "y"})
        assert_error(reply, 401, "authentication")

    def test_obtain_without_password_is_400(self, client):
        reply = client.post("/api/jwt/obtain/", json={"username": "alice"})
        assert_error(reply, 400, "bad_request")

    def test_verify_garbage_is_401(self, client):
        reply = client.post("/api/jwt/verify/", data={"jwt": "not.a.token"})
        assert_error(reply, 401, "authentication")

    def test_run_without_jwt_is_401(self, client):
        for path in ("software/run/bash/", "software/muse/run/bash/"):
            reply = client.post(f"/api/{path}", json={"cmd": "true"})
            body = assert_error(reply, 401, "authentication")
            assert "jwt" in body["error"].lower()

    def test_run_with_wrong_jwt_is_401(self, client):
        reply = client.post(
            "/api/software/muse/run/bash/", json={"cmd": "true", "jwt": "x.y.z"}
        )
        assert_error(reply, 401, "authentication")

    def test_expired_jwt_is_401(self, make_client):
        client = make_client(token_lifetime=-5)
        token = obtain_token(client)
        reply = client.post(
            "/api/software/muse/run/bash/", json={"cmd": "true", "jwt": token}
        )
        body = assert_error(reply, 401, "authentication")
        assert "expired" in body["error"]

    def test_bearer_header_is_accepted(self, client, token):
        reply = client.post(
            "/api/software/muse/run/bash/",
            json={"cmd": "true"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 200, reply.text

    def test_user_without_access_gets_403(self, client):
        token = obtain_token(client, "bob")
        for path in ("software/run/other/", "software/muse/run/other/"):
            reply = client.post(f"/api/{path}", json={"cmd": "true", "jwt": token})
            assert_error(reply, 403, "forbidden")
        allowed = client.post(
            "/api/software/run/bash/", json={"cmd": "echo ok", "jwt": token}
        )
        assert allowed.json()["info"]["stdout"] == "ok"

    def test_no_users_file_says_what_to_set(self, make_client):
        client = make_client(users_file=None)
        reply = client.post("/api/jwt/obtain/", json={"username": "a", "password": "b"})
        body = assert_error(reply, 401, "authentication")
        assert "--users" in body["error"]


class TestSoftwareList:
    def test_documented_shape(self, client):
        reply = client.get("/api/software/list/")
        assert reply.status_code == 200
        entries = {entry["name"]: entry for entry in reply.json()}
        assert set(entries) == {"sw_example", "bash", "other"}
        sw = entries["sw_example"]["info"]["sw"]
        assert sw["shortname"] == "sw_example"
        assert sw["keywords"] == ["addition", "python", "example"]
        assert sw["urls"] == {"language": "https://www.python.org"}
        assert sw["desc"].startswith("software example")

    def test_default_catalog_when_no_catalog_given(self, make_client):
        client = make_client(catalog_file=None)
        names = {entry["name"] for entry in client.get("/api/software/list").json()}
        assert {"bwa", "samtools", "bcftools", "python", "bash", "snakemake"} <= names


class TestTrailingSlash:
    @pytest.mark.parametrize("slash", ["", "/"])
    def test_every_path_answers_both_ways_without_redirect(self, client, token, slash):
        posted = client.post(
            f"/api/software/muse/run/bash{slash}",
            json={"cmd": "echo hi", "jwt": token},
            follow_redirects=False,
        )
        assert posted.status_code == 200
        key = key_of(posted.json())
        wait_state(client, "bash", key)
        for path in (
            f"software/muse/state/bash/{key}",
            f"software/muse/run/bash/{key}",
            f"software/muse/content/bash/{key}",
            "software/list",
        ):
            reply = client.get(f"/api/{path}{slash}", follow_redirects=False)
            assert reply.status_code == 200, (path, reply.text)
        obtain = client.post(
            f"/api/jwt/obtain{slash}",
            json={"username": "alice", "password": "alice-pw"},
            follow_redirects=False,
        )
        assert obtain.status_code == 200
        verify = client.post(
            f"/api/jwt/verify{slash}", json={"jwt": token}, follow_redirects=False
        )
        assert verify.status_code == 200
        sync = client.post(
            f"/api/software/run/bash{slash}",
            json={"cmd": "echo hi", "jwt": token},
            follow_redirects=False,
        )
        assert sync.status_code == 200


@pytest.mark.parametrize("mode", ["sync", "muse"])
class TestDocumentedExamples:
    def test_a_stdout_as_json(self, client, token, mode):
        reply = run_example(
            client,
            token,
            mode,
            {"cmd": "python add.py 4 5", "returned_type": "stdout", "todownload": "no"},
        )
        assert reply.status_code == 200
        info = reply.json()["info"]
        assert info["stdout"] == "9.0"
        report = info["report"]
        assert report["name"] == "sw_example"
        assert report["cr"] == "OK"
        assert report["request"]["todownload"] is False
        assert report["request"]["ordered_filename_list"] == []
        assert report["request"]["cmd"] == "python add.py 4 5"

    def test_b_stdout_txt_from_a_form(self, client, token, mode):
        form = {"cmd": "python add.py 4 55", "returned_type": "stdout.txt"}
        if mode == "sync":
            reply = client.post(
                "/api/software/run/sw_example/",
                content=f"jwt={token}&cmd=python add.py 4 55&returned_type=stdout.txt"
                "&todownload=no",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            reply = run_example(client, token, mode, form)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        assert reply.text == "59.0\n"

    def test_c_run_zip(self, client, token, mode):
        reply = run_example(
            client,
            token,
            mode,
            {"cmd": "python add.py 1 2 > out.txt", "returned_type": "run.zip"},
        )
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(reply.content)) as zipped:
            names = set(zipped.namelist())
            assert {
                "__WS__stdout.txt",
                "__WS__stderr.txt",
                "out.txt",
                "add.py",
            } <= names
            assert zipped.read("out.txt") == b"3.0\n"

    def test_d_todownload_then_download(self, client, token, mode):
        reply = run_example(
            client,
            token,
            mode,
            {
                "cmd": "python add.py 2 2",
                "returned_type": "run.zip",
                "todownload": "yes",
            },
        )
        assert reply.status_code == 200
        body = reply.json()
        assert "/api/download/?key=" in body["url"]
        assert "can be downloaded at" in body["msg"]
        key = body["url"].split("key=")[1]
        date, clock, rest = key.split("_", 2)
        assert len(date) == 8 and date.isdigit() and len(clock) == 6
        assert len(rest) == 36
        download = client.get("/api/download/", params={"key": key})
        assert download.status_code == 200
        with zipfile.ZipFile(io.BytesIO(download.content)) as zipped:
            assert zipped.read("__WS__stdout.txt") == b"4.0\n"

    def test_e_stdin_txt(self, client, token, mode):
        files = [("file", ("stdin.txt", b"10 20\n40\n", "text/plain"))]
        reply = run_example(
            client, token, mode, {"cmd": "python add.py", "returned_type": "stdout"},
            files=files,
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        info = reply.json()["info"]
        assert info["stdout"] == "70.0"
        assert info["report"]["request"]["ordered_filename_list"] == ["stdin.txt"]

    def test_f_usrcmd_sh_with_files_order(self, client, token, mode):
        script = b"#!/bin/bash\nVALUE=7\npython add.py $VALUE 3\n"
        files = [
            ("file", ("usrcmd.sh", script, "text/x-sh")),
            ("file", ("stdin.txt", b"1 1\n", "text/plain")),
        ]
        fields = {
            "cmd": "bash usrcmd.sh",
            "files_order": json.dumps(["stdin.txt", "usrcmd.sh"]),
            "returned_type": "stdout",
        }
        reply = run_example(client, token, mode, fields, files=files)
        assert reply.status_code == 200, reply.text
        info = reply.json()["info"]
        assert info["stdout"] == "10.0"
        order = info["report"]["request"]["ordered_filename_list"]
        assert order == ["stdin.txt", "usrcmd.sh"]


class TestMuseRun:
    def test_report_shape_and_increasing_job_names(self, client, token):
        first = key_of(submit(client, token, "bash", cmd="true"))
        second_reply = submit(
            client, token, "bash", cmd="true", sbatch_list=["time=5"],
            module_list=[],
        )  # fmt: skip
        assert set(second_reply["urls"]) == {"state", "run", "content", "cancel"}
        assert "key value=" in second_reply["msg"]
        second = key_of(second_reply)
        reports = [
            wait_state(client, "bash", key)["info"]["report"] for key in (first, second)
        ]
        numbers = [int(r["process"]["jobname"].split("-ws-")[0]) for r in reports]
        assert numbers[1] == numbers[0] + 1
        assert all(r["process"]["jobname"].endswith("-ws-bash") for r in reports)
        report = reports[1]
        assert report["rsrc"] == {"identity": "muse"}
        assert isinstance(report["process"]["job_id"], int)
        assert report["process"]["latest_cr"] == "ENDED_OK"
        assert report["process"]["latest_state"] == "COMPLETED"
        assert report["request"]["sbatch_list"] == ["time=5"]
        assert report["request"]["module_list"] == []

    def test_sbatch_list_as_json_string_in_multipart(self, client, token):
        reply = client.post(
            "/api/software/muse/run/bash/",
            data={"jwt": token, "cmd": "true", "sbatch_list": '["-t", "5", "mem=1G"]'},
            files=[("file", ("a.txt", b"a", "text/plain"))],
        )
        assert reply.status_code == 200, reply.text
        state = wait_state(client, "bash", key_of(reply.json()))
        assert state["info"]["report"]["request"]["sbatch_list"] == [
            "-t",
            "5",
            "mem=1G",
        ]

    def test_state_urls_use_public_url(self, make_client):
        client = make_client(public_url="http://muse.example:9000/api/")
        reply = submit(client, obtain_token(client), "bash", cmd="true")
        assert reply["url"].startswith("http://muse.example:9000/api/software/muse/")

    def test_failed_job_is_nok_and_its_results_409(self, client, token):
        key = key_of(submit(client, token, "bash", cmd="echo oops >&2; exit 3"))
        state = wait_state(client, "bash", key)
        report = state["info"]["report"]
        assert report["cr"] == "NOK"
        assert report["process"]["latest_cr"] == "ENDED_NOK"
        assert report["process"]["latest_state"] == "FAILED"
        assert report["process"]["exit_code"] == 3
        assert "/content/" in state["url"]
        body = assert_error(
            client.get(f"/api/software/muse/run/bash/{key}/"), 409, "not_ready"
        )
        assert "FAILED" in body["error"]
        content = client.get(f"/api/software/muse/content/bash/{key}/")
        with zipfile.ZipFile(io.BytesIO(content.content)) as zipped:
            assert zipped.read("__WS__stderr.txt") == b"oops\n"

    def test_results_before_the_end_are_409(self, client, token):
        key = key_of(submit(client, token, "bash", cmd="sleep 5"))
        body = assert_error(
            client.get(f"/api/software/muse/run/bash/{key}/"), 409, "not_ready"
        )
        assert "poll the state URL" in " ".join(body["more"])
        client.post(f"/api/software/muse/cancel/bash/{key}/", json={"jwt": token})

    def test_content_while_running_and_after(self, client, token):
        cmd = "echo started > progress.txt; sleep 1.5; echo done > final.txt"
        key = key_of(submit(client, token, "bash", cmd=cmd))
        wait_state(
            client, "bash", key, lambda r: r["process"]["latest_state"] == "RUNNING"
        )
        deadline_names: set[str] = set()
        for _ in range(40):
            during = client.get(f"/api/software/muse/content/bash/{key}/")
            assert during.status_code == 200
            deadline_names = set(zipfile.ZipFile(io.BytesIO(during.content)).namelist())
            if "progress.txt" in deadline_names:
                break
        assert "progress.txt" in deadline_names
        assert "final.txt" not in deadline_names
        assert "__WS__batch.sh" in deadline_names
        wait_state(client, "bash", key)
        after = client.get(f"/api/software/muse/content/bash/{key}")
        names = set(zipfile.ZipFile(io.BytesIO(after.content)).namelist())
        assert {"progress.txt", "final.txt", "__WS__stdout.txt"} <= names

    def test_stdout_txt_todownload_and_download_by_key(self, client, token):
        key = key_of(
            submit(
                client, token, "bash", cmd="echo hello",
                returned_type="stdout.txt", todownload="yes",
            )
        )  # fmt: skip
        wait_state(client, "bash", key)
        first = client.get(f"/api/software/muse/run/bash/{key}/").json()
        again = client.get(f"/api/software/muse/run/bash/{key}/").json()
        assert first["url"] == again["url"]
        download = client.get(first["url"].replace("http://testserver", ""))
        assert download.text == "hello\n"

    def test_module_list_without_module_command_fails_clearly(self, client, token):
        key = key_of(
            submit(client, token, "bash", cmd="true", module_list=["toolA/1.2", "tB"])
        )
        report = wait_state(client, "bash", key)["info"]["report"]
        assert report["cr"] == "NOK"
        content = client.get(f"/api/software/muse/content/bash/{key}/")
        stderr = zipfile.ZipFile(io.BytesIO(content.content)).read("__WS__stderr.txt")
        assert b"toolA/1.2 tB" in stderr
        assert b"'module' command is not available" in stderr

    def test_any_software_runs_unknown_names_on_the_host(self, make_client, caplog):
        client = make_client(any_software=True)
        token = obtain_token(client)
        for _ in range(2):
            reply = client.post(
                "/api/software/run/made_up/", json={"cmd": "echo x", "jwt": token}
            )
            assert reply.json()["info"]["stdout"] == "x"
        warnings = [r for r in caplog.records if "made_up" in r.getMessage()]
        assert len(warnings) == 1

    def test_format_json_and_api_are_answered_as_json(self, client, token):
        for value in ("json", "api"):
            reply = client.get("/api/software/list/", params={"format": value})
            assert reply.status_code == 200
            reply = client.post(
                "/api/software/run/bash/",
                json={"cmd": "echo f", "jwt": token, "format": value},
            )
            assert reply.json()["info"]["stdout"] == "f"
        assert_error(
            client.get("/api/software/list/", params={"format": "xml"}),
            400, "bad_request",
        )  # fmt: skip


class TestCancel:
    def test_owner_cancels_a_running_job(self, client, token):
        key = key_of(submit(client, token, "bash", cmd="sleep 30"))
        wait_state(
            client, "bash", key, lambda r: r["process"]["latest_state"] == "RUNNING"
        )
        other = obtain_token(client, "bob")
        refused = client.post(
            f"/api/software/muse/cancel/bash/{key}/", json={"jwt": other}
        )
        assert_error(refused, 403, "forbidden")
        anonymous = client.post(f"/api/software/muse/cancel/bash/{key}/")
        assert_error(anonymous, 401, "authentication")
        reply = client.post(
            f"/api/software/muse/cancel/bash/{key}/", json={"jwt": token}
        )
        assert reply.status_code == 200
        state = wait_state(client, "bash", key, timeout=5)
        report = state["info"]["report"]
        assert report["process"]["latest_state"] == "CANCELLED"
        assert report["cr"] == "NOK"


class TestErrors:
    def test_unknown_route_and_key(self, client):
        assert_error(client.get("/api/no/such/thing/"), 404, "not_found")
        assert_error(
            client.get("/api/software/muse/state/bash/0591aaf8-8a12-4967-848a-12687/"),
            404, "not_found",
        )  # fmt: skip
        assert_error(client.get("/api/download/?key=nope"), 404, "not_found")
        assert_error(client.get("/api/download/"), 400, "bad_request")

    def test_key_of_another_software_is_404(self, client, token):
        key = key_of(submit(client, token, "bash", cmd="true"))
        body = assert_error(
            client.get(f"/api/software/muse/state/sw_example/{key}/"), 404, "not_found"
        )
        assert "belongs to software 'bash'" in " ".join(body["more"])

    def test_unknown_software_is_404(self, client, token):
        reply = client.post(
            "/api/software/muse/run/nosuch/", json={"cmd": "true", "jwt": token}
        )
        body = assert_error(reply, 404, "not_found")
        assert "--any-software" in " ".join(body["more"])

    @pytest.mark.parametrize(
        ("fields", "needle"),
        [
            ({"returned_type": "pdf"}, "returned_type"),
            ({"todownload": "maybe"}, "todownload"),
            ({"sbatch_list": ["--output=/tmp/x"]}, "'--output=/tmp/x'"),
            ({"sbatch_list": ["time=1\n#SBATCH --x"]}, "newline"),
            ({"module_list": ["a;b"]}, "module_list element"),
            ({"files_order": ["missing.txt"]}, "missing.txt"),
            ({"format": "yaml"}, "format"),
        ],
    )
    def test_bad_parameters_are_400(self, client, token, fields, needle):
        reply = client.post(
            "/api/software/muse/run/bash/", json={"cmd": "true", "jwt": token, **fields}
        )
        body = assert_error(reply, 400, "bad_request")
        assert needle in body["error"]

    def test_body_that_is_not_an_object_is_400(self, client):
        reply = client.post("/api/jwt/obtain/", content=b"[1]",
                            headers={"Content-Type": "application/json"})  # fmt: skip
        assert_error(reply, 400, "bad_request")
        reply = client.post("/api/jwt/obtain/", content=b"{bad",
                            headers={"Content-Type": "application/json"})  # fmt: skip
        assert_error(reply, 400, "bad_request")

    def test_unsupported_content_type_is_400(self, client):
        reply = client.post("/api/jwt/obtain/", content=b"x",
                            headers={"Content-Type": "text/csv"})  # fmt: skip
        body = assert_error(reply, 400, "bad_request")
        assert "multipart/form-data" in " ".join(body["more"])

    def test_body_over_the_limit_is_413(self, make_client):
        client = make_client(max_upload_mb=1)
        token = obtain_token(client)
        reply = client.post(
            "/api/software/muse/run/bash/",
            data={"jwt": token, "cmd": "true"},
            files=[("file", ("big.bin", b"\0" * (2 * 1024 * 1024), "application/x"))],
        )
        body = assert_error(reply, 413, "too_large")
        assert "--max-upload-mb" in " ".join(body["more"])

    def test_more_cpus_than_the_budget_is_refused_like_sbatch(self, client, token):
        reply = client.post(
            "/api/software/muse/run/bash/",
            json={"cmd": "true", "jwt": token, "sbatch_list": ["-c 8"]},
        )
        body = assert_error(reply, 400, "bad_request")
        assert "Requested node configuration is not available" in body["error"]
        assert "--cpus" in body["error"]

    def test_file_field_without_a_file_is_400(self, client, token):
        reply = client.post(
            "/api/software/muse/run/bash/",
            data={"jwt": token, "cmd": "true", "file": "input.zip"},
        )
        body = assert_error(reply, 400, "bad_request")
        assert "file=@" in " ".join(body["more"])

    def test_method_not_allowed_has_the_error_shape(self, client):
        reply = client.get("/api/jwt/obtain/")
        assert reply.status_code == 405
        assert set(reply.json()) == ERROR_KEYS
