"""The state table: every documented value, conflicts and unknown values."""

import pytest

from snakemake_executor_muse.states import (
    SLURM_STATE_TABLE,
    StateReport,
    Verdict,
    decide,
    normalize_slurm_state,
    parse_state_report,
)

RUNNING = [
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "PREEMPTED",
]
FAILED = [
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
]


def report(cr, latest_cr, state):
    return StateReport(cr, latest_cr, normalize_slurm_state(state))


@pytest.mark.parametrize("state", RUNNING)
def test_running_states_keep_waiting(state):
    assert decide(report("WAIT", "IN_PROGRESS", state)).verdict is Verdict.RUNNING


def test_preempted_warns():
    decision = decide(report("WAIT", "IN_PROGRESS", "PREEMPTED"))
    assert decision.verdict is Verdict.RUNNING
    assert "preempted" in decision.warning


@pytest.mark.parametrize("state", FAILED)
def test_failure_states_fail_with_a_reason(state):
    decision = decide(report("NOK", "ENDED_NOK", state))
    assert decision.verdict is Verdict.FAILURE
    assert decision.reason.startswith(state)


def test_reasons_say_what_to_raise():
    assert "runtime" in decide(report("NOK", "ENDED_NOK", "TIMEOUT")).reason
    assert "mem_mb" in decide(report("NOK", "ENDED_NOK", "OUT_OF_MEMORY")).reason


def test_cancelled_by_uid_is_cancelled():
    assert normalize_slurm_state("CANCELLED by 0") == "CANCELLED"
    assert decide(report("NOK", "ENDED_NOK", "CANCELLED by 0")).verdict is (
        Verdict.FAILURE
    )


def test_completed_ok_is_success():
    assert decide(report("OK", "ENDED_OK", "COMPLETED")).verdict is Verdict.SUCCESS


def test_conflict_ok_but_failed_is_failure():
    assert decide(report("OK", "ENDED_OK", "FAILED")).verdict is Verdict.FAILURE
    assert decide(report("OK", "ENDED_NOK", "COMPLETED")).verdict is Verdict.FAILURE


def test_completed_but_cr_wait_keeps_waiting():
    assert decide(report("WAIT", "IN_PROGRESS", "COMPLETED")).verdict is (
        Verdict.RUNNING
    )


def test_unknown_value_is_reported_not_dropped():
    decision = decide(report("WAIT", "IN_PROGRESS", "WEIRD_STATE"))
    assert decision.verdict is Verdict.UNKNOWN
    assert decision.unknown == ("latest_state=WEIRD_STATE",)
    assert decide(report("MAYBE", None, None)).unknown == ("cr=MAYBE",)
    assert decide(StateReport(None, None, None)).verdict is Verdict.UNKNOWN


def test_unknown_with_a_failure_elsewhere_is_a_failure():
    assert decide(report("NOK", "SOMETHING", "NEWSTATE")).verdict is Verdict.FAILURE


def test_every_table_state_has_a_verdict():
    for state, verdict in SLURM_STATE_TABLE.items():
        cr = {"running": "WAIT", "success": "OK", "failure": "NOK"}[verdict.value]
        assert decide(report(cr, None, state)).verdict is verdict


def test_parse_documented_report():
    body = {
        "info": {
            "report": {
                "cr": "OK",
                "name": "sw_example",
                "process": {
                    "jobname": "114-ws-sw_example",
                    "job_id": 2459394,
                    "latest_cr": "ENDED_OK",
                    "latest_state": "COMPLETED",
                },
            }
        },
        "msg": "End of job.",
        "url": "http://127.0.0.1:8000/api/software/muse/run/sw_example/k/",
    }
    parsed = parse_state_report(body)
    assert parsed == StateReport("OK", "ENDED_OK", "COMPLETED", "2459394")
    assert parse_state_report({"info": "garbage"}) == StateReport(None, None, None)
