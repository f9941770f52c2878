"""A scripted Muse API on 127.0.0.1 for the cases the real service cannot play:
refused submissions, dropped connections, slow answers, expiring tokens, short or
corrupt run.zip files, archives with unsafe entries.

Run as ``python muse_mock.py SCENARIO.json PORT_FILE EVENTS.jsonl``; it writes its
port to PORT_FILE once it listens and appends one JSON line per request to
EVENTS.jsonl. A scenario holds, per route, a list of behaviours used in turn (the
last one repeats):

- ``submit``: ``"ok"``, ``"503"``, ``"500-echo"`` (echoes the request's headers and
  URL in the body, as a careless proxy would), ``"ok-no-cancel"``;
- ``state``: ``"running"``, ``"ok"``, ``"nok"``, ``"drop"`` (closes the connection
  without an answer), ``"502"``, ``"slow"`` (answers after ``slow_seconds``),
  ``"401"``;
- ``run`` and ``content``: ``"ok"``, ``"short"`` (Content-Length of the whole zip,
  then 60 % of it and a closed connection), ``"bad-crc"`` (one member's data
  altered);
- ``cancel``: ``"ok"`` or ``"500"``; ``cancel_advertised`` says whether the submit
  answer carries ``urls.cancel``.

``run_zip`` and ``content_zip`` list the members: ``{"name", "text"}`` with an
optional ``"mode"`` (octal string) or ``"link"`` (a symlink's target).

The test that starts it stops it by its PID (``MockService.stop``).
"""

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

SOFTWARE_ROUTE = "/api/software/muse/"


def build_zip(members: list[dict], bad_crc: bool = False) -> bytes:
    """A zip holding the listed members, optionally with one altered member."""
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for member in members:
            info = zipfile.ZipInfo(member["name"])
            info.create_system = 3
            if "link" in member:
                info.external_attr = (0o120777) << 16
                archive.writestr(info, member["link"])
                continue
            mode = int(member.get("mode", "644"), 8)
            kind = 0o040000 if member["name"].endswith("/") else 0o100000
            info.external_attr = (kind | mode) << 16
            archive.writestr(info, member.get("text", ""))
    data = bytearray(buffer.getvalue())
    if bad_crc:
        _alter_first_payload(data, members)
    return bytes(data)


def _alter_first_payload(data: bytearray, members: list[dict]) -> None:
    with zipfile.ZipFile(BytesIO(bytes(data))) as archive:
        for info in archive.infolist():
            if info.file_size and not info.filename.startswith(".muse"):
                name_length = len(info.filename.encode())
                extra = int.from_bytes(
                    data[info.header_offset + 28 : info.header_offset + 30], "little"
                )
                start = info.header_offset + 30 + name_length + extra
                data[start] ^= 0xFF
                return


class Script:
    """Behaviours per route, consumed in turn; the last one repeats."""

    def __init__(self, scenario: dict) -> None:
        self.scenario = scenario
        self.turns: dict[str, int] = {}
        self.lock = threading.Lock()

    def next(self, route: str) -> str:
        steps = self.scenario.get(route) or ["ok"]
        with self.lock:
            turn = self.turns.get(route, 0)
            self.turns[route] = turn + 1
        return steps[min(turn, len(steps) - 1)]


class Handler(BaseHTTPRequestHandler):
    """One request; the server carries the script and the events file."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        received = self._drain(size)
        route, key = self._route()
        behaviour = self.server.script.next(route) if route else "ok"  # type: ignore[attr-defined]
        self._record(method, route, key, behaviour, received)
        if route == "obtain":
            return self._json(200, {"token": "MOCK-TOKEN-RENEWED"})
        if route == "submit":
            return self._submit(behaviour)
        if route == "state":
            return self._state(behaviour)
        if route in ("run", "content"):
            return self._archive(route, behaviour)
        if route == "cancel":
            status = 500 if behaviour == "500" else 200
            return self._json(
                status,
                {"error": "cancel broke", "more": [], "type": "internal"}
                if status == 500
                else {"cancelled": True},
            )
        return self._json(
            404, {"error": "no such route", "more": [], "type": "not_found"}
        )

    def _drain(self, size: int) -> int:
        left = size
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        return size - left

    def _route(self) -> tuple[str, str]:
        path = self.path.split("?")[0]
        if path.startswith("/api/jwt/obtain"):
            return "obtain", ""
        if not path.startswith(SOFTWARE_ROUTE):
            return "", ""
        parts = [p for p in path[len(SOFTWARE_ROUTE) :].split("/") if p]
        action = parts[0] if parts else ""
        if action == "run" and len(parts) == 2:
            return "submit", ""
        return action, parts[2] if len(parts) > 2 else ""

    def _record(
        self, method: str, route: str, key: str, behaviour: str, size: int
    ) -> None:
        event = {
            "method": method,
            "route": route,
            "key": key,
            "behaviour": behaviour,
            "bytes": size,
            "authorization": self.headers.get("Authorization", ""),
            "time": time.time(),
        }
        server = self.server
        with server.events_lock, open(server.events_path, "a") as handle:  # type: ignore[attr-defined]
            handle.write(json.dumps(event) + "\n")

    def _json(self, status: int, body: object, extra: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _submit(self, behaviour: str) -> None:
        if behaviour == "503":
            return self._json(
                503,
                {"error": "busy", "more": [], "type": "internal"},
                {"Retry-After": "0"},
            )
        if behaviour == "500-echo":
            echo = {"url": self.path, "headers": dict(self.headers.items())}
            return self._json(
                500, {"error": json.dumps(echo), "more": [], "type": "internal"}
            )
        key = str(uuid.uuid4())
        base = f"http://127.0.0.1:{self.server.server_address[1]}/api/software/muse"
        urls = {a: f"{base}/{a}/bash/{key}/" for a in ("state", "run", "content")}
        if self.server.script.scenario.get("cancel_advertised", True):  # type: ignore[attr-defined]
            urls["cancel"] = f"{base}/cancel/bash/{key}/"
        self._json(200, {"msg": f"key value={key}", "url": urls["state"], "urls": urls})

    def _state(self, behaviour: str) -> None:
        if behaviour == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if behaviour == "502":
            data = b"<html><title>502 Bad Gateway</title></html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if behaviour == "401":
            return self._json(
                401, {"error": "token expired", "more": [], "type": "authentication"}
            )
        if behaviour == "slow":
            time.sleep(float(self.server.script.scenario.get("slow_seconds", 3)))  # type: ignore[attr-defined]
            behaviour = "running"
        cr, latest, state = {
            "running": ("WAIT", "IN_PROGRESS", "RUNNING"),
            "ok": ("OK", "ENDED_OK", "COMPLETED"),
            "nok": ("NOK", "ENDED_NOK", "FAILED"),
        }[behaviour]
        process = {"latest_cr": latest, "latest_state": state, "job_id": 7}
        self._json(200, {"info": {"report": {"cr": cr, "process": process}}})

    def _archive(self, route: str, behaviour: str) -> None:
        scenario = self.server.script.scenario  # type: ignore[attr-defined]
        members = scenario.get(f"{route}_zip") or []
        data = build_zip(members, bad_crc=behaviour == "bad-crc")
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if behaviour == "short":
            self.wfile.write(data[: int(len(data) * 0.6)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)


def serve(scenario_path: Path, port_file: Path, events_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.script = Script(json.loads(scenario_path.read_text()))  # type: ignore[attr-defined]
    server.events_path = events_path  # type: ignore[attr-defined]
    server.events_lock = threading.Lock()  # type: ignore[attr-defined]
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


@dataclass
class MockService:
    """A running mock, started by a test and stopped by its PID."""

    process: subprocess.Popen
    url: str
    events_path: Path

    def events(self, route: str | None = None) -> list[dict]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if route is None or e["route"] == route]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_mock(folder: Path, scenario: dict) -> MockService:
    """Start the mock with this scenario; return it once it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    scenario_path = folder / "scenario.json"
    scenario_path.write_text(json.dumps(scenario))
    port_file = folder / "port"
    events = folder / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, __file__, str(scenario_path), str(port_file), str(events)]
    )
    deadline = time.monotonic() + 15
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("the Muse mock did not start")
        time.sleep(0.05)
    port = int(port_file.read_text())
    return MockService(process, f"http://127.0.0.1:{port}/api/", events)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
