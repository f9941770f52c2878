"""Fixtures of the service tests: a catalog with sw_example, users, an app, a client."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from muse_service_helpers import obtain_token, write_service_files

from snakemake_executor_muse.service.app import ServiceConfig, create_app


@pytest.fixture
def service_files(tmp_path: Path) -> dict[str, Path]:
    return write_service_files(tmp_path / "conf")


@pytest.fixture
def make_client(
    tmp_path: Path, service_files: dict[str, Path]
) -> Iterator[Callable[..., TestClient]]:
    """Build a TestClient on a fresh service; keyword arguments go to ServiceConfig."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        options: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "users_file": service_files["users"],
            "catalog_file": service_files["catalog"],
            "cpus": 2,
        }
        options.update(overrides)
        client = TestClient(create_app(ServiceConfig(**options)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def token(client: TestClient) -> str:
    return obtain_token(client)
