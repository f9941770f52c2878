"""The ``muse`` command: ``muse serve`` runs the service, ``muse hash-password``
prints a password hash for the users file.

``muse serve`` binds 127.0.0.1 unless told otherwise, accepts ``--port 0`` (a free
port, written to ``--port-file`` once the service listens) and, with
``--parent-pid``, stops by itself when that process is gone, leaving running jobs
running (a later ``muse serve`` on the same state folder takes them over).
"""

import argparse
import getpass
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from .app import ServiceConfig, create_app
from .auth import DEFAULT_ITERATIONS, UsersFileError, hash_password
from .backends import BACKEND_NAMES, UnknownBackend
from .catalog import CatalogError

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse", description="A local service speaking the Muse (ws) API."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--port-file", type=Path, help="write the port here once up")
    serve.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="jobs, run folders, database and token secret",
    )
    serve.add_argument("--users", type=Path, help="users YAML file")
    serve.add_argument(
        "--catalog", type=Path, help="software catalog YAML (default: the packaged one)"
    )
    serve.add_argument(
        "--any-software",
        action="store_true",
        help="run names missing from the catalog on the host",
    )
    serve.add_argument("--backend", choices=BACKEND_NAMES, default="local")
    serve.add_argument("--cpus", type=int, help="local CPU budget (default: all)")
    serve.add_argument("--token-lifetime", type=int, default=3600, help="seconds")
    serve.add_argument("--max-upload-mb", type=int, default=10240)
    serve.add_argument(
        "--parent-pid",
        type=int,
        help="stop when this process is gone; jobs keep running",
    )
    serve.add_argument("--public-url", help="base of returned URLs, http://host:port")
    serve.add_argument(
        "--poll-interval",
        type=float,
        help="seconds between backend polls (0.25 local, 1 slurm)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    hashing = commands.add_parser(
        "hash-password", help="read a password on stdin, print its hash"
    )
    hashing.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "hash-password":
        return hash_password_command(args.iterations)
    return serve_command(args)


def hash_password_command(iterations: int) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("muse hash-password: read an empty password on stdin", file=sys.stderr)
        return 2
    print(hash_password(password, iterations))
    return 0


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(
        state_dir=args.state_dir,
        users_file=args.users,
        catalog_file=args.catalog,
        any_software=args.any_software,
        backend=args.backend,
        cpus=args.cpus,
        token_lifetime=args.token_lifetime,
        max_upload_mb=args.max_upload_mb,
        public_url=args.public_url,
        poll_interval=args.poll_interval,
    )


def serve_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        app = create_app(config_from_args(args))
    except (CatalogError, UsersFileError, UnknownBackend, OSError) as exc:
        print(f"muse serve: {exc}", file=sys.stderr)
        return 2
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(
            f"muse serve: cannot listen on {args.host}:{args.port}: {exc}; "
            "choose another --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 2
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="on")
    )
    _watch(_announce, server, args.port_file, args.host, port)
    if args.parent_pid:
        _watch(_follow_parent, server, args.parent_pid)
    server.run(sockets=[sock])
    return 0


def _watch(target, *args) -> None:  # type: ignore[no-untyped-def]
    threading.Thread(target=target, args=args, daemon=True).start()


def _announce(
    server: uvicorn.Server, port_file: Path | None, host: str, port: int
) -> None:
    """Write the port file (atomically) once the server accepts connections."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    logger.info("listening on http://%s:%d/api/", host, port)
    if port_file is not None:
        partial = port_file.with_name(f".{port_file.name}.{os.getpid()}")
        partial.write_text(f"{port}\n")
        os.replace(partial, port_file)


def _follow_parent(server: uvicorn.Server, parent_pid: int) -> None:
    while process_exists(parent_pid):
        time.sleep(0.5)
    logger.info("parent process %d is gone: stopping, jobs keep running", parent_pid)
    server.should_exit = True


def process_exists(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"
