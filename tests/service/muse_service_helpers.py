"""Helpers of the service tests: service files, login, submit and wait for a state."""

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from snakemake_executor_muse.service.auth import hash_password

HERE = Path(__file__).parent
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
# few PBKDF2 rounds keep the tests fast; the CLI's default is 600 000
FAST_ROUNDS = 1000


def write_service_files(folder: Path) -> dict[str, Path]:
    """A catalog (sw_example like the documented one, bash, other) and users."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "add.py", folder / "add.py")
    catalog = {
        "softwares": {
            "sw_example": {
                "desc": "software example (addition, in python code)",
                "keywords": ["addition", "python", "example"],
                "urls": {"language": "https://www.python.org"},
                "run": "host",
                "service_python": True,
                "files": ["add.py"],
            },
            "bash": {"desc": "bash on the host", "run": "host"},
            "other": {"desc": "a software bob may not run", "run": "host"},
        }
    }
    users = {
        "users": {
            "alice": {
                "password_hash": hash_password(PASSWORDS["alice"], FAST_ROUNDS),
                "softwares": ["*"],
            },
            "bob": {
                "password_hash": hash_password(PASSWORDS["bob"], FAST_ROUNDS),
                "softwares": ["sw_example", "bash"],
            },
        }
    }
    paths = {"catalog": folder / "catalog.yaml", "users": folder / "users.yaml"}
    paths["catalog"].write_text(yaml.safe_dump(catalog))
    paths["users"].write_text(yaml.safe_dump(users))
    return paths


def obtain_token(client: TestClient, user: str = "alice") -> str:
    reply = client.post(
        "/api/jwt/obtain/", json={"username": user, "password": PASSWORDS[user]}
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["token"])


def key_of(reply_json: dict[str, Any]) -> str:
    """The key: the last path segment of the state url, as a client must take it."""
    return str(reply_json["url"].rstrip("/").rsplit("/", 1)[1])


def wait_state(
    client: TestClient,
    name: str,
    key: str,
    until: Callable[[dict[str, Any]], bool] | None = None,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Poll the state URL until ``until(report)`` (default: cr is not WAIT)."""
    done = until or (lambda report: report["cr"] != "WAIT")
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get(f"/api/software/muse/state/{name}/{key}/")
        assert reply.status_code == 200, reply.text
        report = reply.json()["info"]["report"]
        if done(report):
            return dict(reply.json())
        assert time.monotonic() < deadline, f"job {key} stayed {report['process']}"
        time.sleep(0.05)


def submit(
    client: TestClient, token: str, name: str = "bash", **fields: Any
) -> dict[str, Any]:
    """POST software/muse/run as JSON; return the reply body (status 200 checked)."""
    reply = client.post(
        f"/api/software/muse/run/{name}/", json={"jwt": token, **fields}
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json())
