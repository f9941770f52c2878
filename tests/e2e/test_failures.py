"""Failed jobs and broken answers (field cases BC-06, BC-08, BC-09, BC-10, BC-11,
BC-12, BC-14, BC-16): the real local service where it can play the case, the
scripted mock of muse_mock.py where it cannot."""

import re
import uuid

import pytest
from muse_e2e import run_snakemake
from muse_mock import start_mock

pytestmark = pytest.mark.e2e

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TOKEN = "SECRET-TOKEN-123"
RULE_A = """
rule a:
    output: "r/a.txt"
    shell: "echo a > {output}"
"""
GOOD_RUN_ZIP = [
    {"name": "r/a.txt", "text": "a\n"},
    {"name": ".muse/exit_code", "text": "0\n"},
    {"name": "__WS__stdout.txt", "text": ""},
]


@pytest.fixture
def mock(tmp_path_factory):
    started = []

    def start(scenario):
        service = start_mock(tmp_path_factory.mktemp("mock"), scenario)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def run_on_mock(folder, service, *args, timeout=120):
    return run_snakemake(
        folder,
        "--muse-url",
        service.url,
        "--muse-request-timeout",
        "1",
        "--muse-software",
        "bash",
        *args,
        timeout=timeout,
        env={"SNAKEMAKE_MUSE_JWT": TOKEN},
    )


def files_containing(folder, text):
    found = []
    for path in folder.rglob("*"):
        readable = path.is_file() and not path.is_symlink()
        if readable and text.encode() in path.read_bytes():
            found.append(path)
    return found


def test_missing_declared_output_names_file_and_key(workflow):
    folder = workflow(
        """
        rule forgets:
            output: "m/made.txt", "m/forgotten.txt"
            shell: "echo ok > m/made.txt"
        """
    )

    run = run_snakemake(folder, "m/made.txt")

    assert run.returncode != 0
    found = re.search(
        rf"Muse job ({UUID}) \(rule forgets, software bash\) failed: declared "
        r"output\(s\) missing from run.zip: m/forgotten.txt",
        run.output,
    )
    assert found, run.output
    assert not (folder / "m/made.txt").exists()


def test_failed_job_logs_come_back_and_nothing_partial(workflow):
    folder = workflow(
        """
        rule boom:
            output: "b/out.txt"
            log: out="logs/boom.out", err="logs/boom.err"
            shell:
                "(echo partial > {output}; echo step1; echo 'bad input' >&2; exit 1)"
                " > {log.out} 2> {log.err}"
        """
    )

    run = run_snakemake(folder, "--show-failed-logs", "b/out.txt")

    assert run.returncode != 0
    assert (folder / "logs/boom.out").read_text() == "step1\n"
    assert (folder / "logs/boom.err").read_text() == "bad input\n"
    key = re.search(rf"Muse job ({UUID}) \(rule boom", run.output)
    assert key, run.output
    assert "FAILED" in run.output and "command exit code 1" in run.output
    saved = folder / ".snakemake/muse/logs/boom/no_wildcards" / key.group(1)
    assert (saved / "__WS__stderr.txt").exists()
    assert str((saved / "__WS__stderr.txt").relative_to(folder)) in run.output
    assert "Logfile logs/boom.err:" in run.output
    assert "bad input" in run.output.split("Logfile logs/boom.err:")[1]
    assert not (folder / "b/out.txt").exists()
    dry = run_snakemake(folder, "--dry-run", "b/out.txt")
    assert re.search(r"^boom\s+1$", dry.output, re.MULTILINE), dry.output


def test_transient_errors_while_submitting_and_polling(workflow, mock):
    service = mock(
        {
            "submit": ["503", "ok"],
            "state": ["drop", "drop", "drop", "502", "502", "slow", "running", "ok"],
            "slow_seconds": 3,
            "run_zip": GOOD_RUN_ZIP,
        }
    )
    folder = workflow(RULE_A)

    run = run_on_mock(folder, service, "r/a.txt")

    assert run.returncode == 0, run.output
    assert (folder / "r/a.txt").read_text() == "a\n"
    assert "HTTP 503" in run.output and "Retrying" in run.output
    assert "still waiting" in run.output
    assert [e["behaviour"] for e in service.events("submit")] == ["503", "ok"]
    assert len(service.events("state")) >= 8


def test_token_never_shown_or_written(workflow, mock):
    service = mock({"submit": ["500-echo"]})
    folder = workflow(RULE_A)

    run = run_on_mock(folder, service, "--verbose", "r/a.txt")

    assert run.returncode != 0
    assert "HTTP 500" in run.output
    assert "Bearer ***" in run.output
    assert TOKEN not in run.output
    assert files_containing(folder, TOKEN) == []
    assert service.events("submit")[0]["authorization"] == f"Bearer {TOKEN}"


def test_expired_token_stops_polling_and_lists_keys(workflow, mock):
    service = mock({"state": ["running", "running", "401"], "cancel_advertised": False})
    folder = workflow(RULE_A)

    run = run_on_mock(folder, service, "r/a.txt")

    assert run.returncode != 0
    key = service.events("submit")[0]
    keys = {e["key"] for e in service.events("state")}
    assert len(keys) == 1
    (key,) = keys
    assert "authentication expired" in run.output
    assert re.search(rf"^\s+{key} \(a, bash\)$", run.output, re.MULTILINE), run.output
    assert f"Muse job {key}" not in run.output  # not reported as a failed job
    markers = list((folder / ".snakemake/incomplete").iterdir())
    assert len(markers) == 1 and key in markers[0].read_text()


def test_short_then_corrupt_download_fails_cleanly(workflow, mock):
    service = mock(
        {
            "state": ["ok"],
            "run": ["short", "bad-crc"],
            "run_zip": GOOD_RUN_ZIP,
        }
    )
    folder = workflow(RULE_A)

    run = run_on_mock(folder, service, "r/a.txt")

    assert run.returncode != 0
    assert "broke off" in run.output
    assert "fails its CRC check" in run.output
    assert [e["behaviour"] for e in service.events("run")] == [
        "short",
        "bad-crc",
        "bad-crc",
        "bad-crc",
    ]
    assert not (folder / "r").exists()
    assert not list(folder.rglob("*.part"))


def test_short_download_is_retried_then_succeeds(workflow, mock):
    service = mock(
        {"state": ["ok"], "run": ["short", "bad-crc", "ok"], "run_zip": GOOD_RUN_ZIP}
    )
    folder = workflow(RULE_A)

    run = run_on_mock(folder, service, "r/a.txt")

    assert run.returncode == 0, run.output
    assert (folder / "r/a.txt").read_text() == "a\n"
    assert "downloading it again" in run.output


@pytest.mark.parametrize("route", ["run", "content"])
def test_zip_slip_archive_is_refused(workflow, mock, tmp_path, route):
    tag = uuid.uuid4().hex
    slip = [
        {"name": "r/a.txt", "text": "a\n"},
        {"name": f"../escape1-{tag}.txt", "text": "x"},
        {"name": f"r/../../escape2-{tag}.txt", "text": "x"},
        {"name": f"/tmp/escape3-{tag}.txt", "text": "x"},
        {"name": "r/link", "link": "/etc"},
        {"name": f"r/link/copied-{tag}.txt", "text": "x"},
        {"name": ".muse/exit_code", "text": "0\n" if route == "run" else "1\n"},
    ]
    service = mock(
        {
            "state": ["ok" if route == "run" else "nok"],
            f"{route}_zip": slip,
        }
    )
    folder = workflow(
        """
        rule a:
            output: "r/a.txt"
            log: "r/link/copied.txt"
            shell: "echo a > {output}"
        """
    )

    run = run_on_mock(folder, service, "r/a.txt")

    assert run.returncode != 0
    assert f"unsafe path in archive: ../escape1-{tag}.txt" in run.output
    everywhere = [tmp_path.parent, folder.parent, __import__("pathlib").Path("/tmp")]
    for place in everywhere:
        assert not list(place.rglob(f"*{tag}*")), place
    assert not (folder / "r").exists()
