"""The service's durable memory: jobs, their keys and owners, counters, downloads.

One SQLite file in WAL mode under the state folder. Every change is committed before
the request that made it is answered, so that a service killed at any moment and
started again on the same state folder knows every key it handed out, every job's
last state, the job-name counter and every download key.
"""

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.base import TERMINAL_STATES

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    job_name TEXT NOT NULL,
    backend TEXT NOT NULL,
    backend_id TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    request_json TEXT NOT NULL,
    run_path TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    download_key TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS downloads (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    filename TEXT NOT NULL,
    media_type TEXT NOT NULL,
    job_key TEXT,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class JobRecord:
    """One job as the store knows it."""

    key: str
    name: str
    owner: str
    seq: int
    job_name: str
    backend: str
    backend_id: str
    state: str
    exit_code: int | None
    reason: str
    request: dict[str, Any]
    run_path: Path
    created: float
    updated: float
    cancel_requested: bool
    download_key: str | None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code in (0, None)


@dataclass(frozen=True)
class Download:
    """A stored result that ``GET download/?key=`` hands out."""

    key: str
    path: Path
    filename: str
    media_type: str


class Store:
    """Thread-safe access to the SQLite file (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def next_counter(self, name: str) -> int:
        """Increment and return a named counter (starts at 1)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (name,),
            )
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = ?", (name,)
            ).fetchone()
            self._db.execute("COMMIT")
        return int(row["value"])

    def add_job(self, job: JobRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs(key, name, owner, seq, job_name, backend, backend_id,"
                " state, exit_code, reason, request_json, run_path, created, updated,"
                " cancel_requested, download_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.key,
                    job.name,
                    job.owner,
                    job.seq,
                    job.job_name,
                    job.backend,
                    job.backend_id,
                    job.state,
                    job.exit_code,
                    job.reason,
                    json.dumps(job.request),
                    str(job.run_path),
                    job.created,
                    job.updated,
                    int(job.cancel_requested),
                    job.download_key,
                ),
            )

    def get_job(self, key: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE key = ?", (key,)
            ).fetchone()
        return _job(row) if row else None

    def active_jobs(self) -> list[JobRecord]:
        """Jobs whose state may still change."""
        marks = ",".join("?" for _ in TERMINAL_STATES)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE state NOT IN ({marks}) ORDER BY seq",
                tuple(TERMINAL_STATES),
            ).fetchall()
        return [_job(row) for row in rows]

    def set_state(
        self, key: str, state: str, exit_code: int | None, reason: str
    ) -> None:
        """Record a new observation; a job that has ended never changes again."""
        marks = ",".join("?" for _ in TERMINAL_STATES)
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, exit_code = ?, reason = ?, updated = ?"
                f" WHERE key = ? AND state NOT IN ({marks})",
                (state, exit_code, reason, time.time(), key, *TERMINAL_STATES),
            )

    def mark_cancel_requested(self, key: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET cancel_requested = 1, updated = ? WHERE key = ?",
                (time.time(), key),
            )

    def add_download(self, download: Download, job_key: str | None) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO downloads(key, path, filename, media_type, job_key,"
                " created) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    download.key,
                    str(download.path),
                    download.filename,
                    download.media_type,
                    job_key,
                    time.time(),
                ),
            )
            if job_key is not None:
                self._db.execute(
                    "UPDATE jobs SET download_key = ? WHERE key = ?",
                    (download.key, job_key),
                )
            self._db.execute("COMMIT")

    def get_download(self, key: str) -> Download | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM downloads WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return Download(
            row["key"], Path(row["path"]), row["filename"], row["media_type"]
        )


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        key=row["key"],
        name=row["name"],
        owner=row["owner"],
        seq=int(row["seq"]),
        job_name=row["job_name"],
        backend=row["backend"],
        backend_id=row["backend_id"],
        state=row["state"],
        exit_code=row["exit_code"],
        reason=row["reason"],
        request=json.loads(row["request_json"]),
        run_path=Path(row["run_path"]),
        created=float(row["created"]),
        updated=float(row["updated"]),
        cancel_requested=bool(row["cancel_requested"]),
        download_key=row["download_key"],
    )
