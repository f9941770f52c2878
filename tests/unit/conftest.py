"""Fixtures of the plugin's unit tests: real Snakemake jobs, no service needed."""

import contextlib
import os
import types
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def snakemake_jobs(
    workdir: Path,
    snakefile: str,
    default_resources: list[str] | None = None,
    set_resources: list[str] | None = None,
    set_threads: list[str] | None = None,
) -> Iterator[dict[str, list]]:
    """Build the DAG of ``snakefile`` as Snakemake 9 does for a remote executor
    (``non_local_exec``, no shared file system) and yield its jobs by rule.

    Default and overriding resources are parsed with the same functions as the
    ``--default-resources`` / ``--set-resources`` / ``--set-threads`` options.
    """
    from snakemake.api import SnakemakeApi
    from snakemake.cli import parse_set_resources, parse_set_threads
    from snakemake.resources import Resources
    from snakemake.settings.types import (
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    from snakemake_executor_muse.settings import common_settings

    (workdir / "Snakefile").write_text(snakefile)
    defaults = None
    if default_resources is not None:
        parser = Resources.parser_factory(defaults="full", allow_expressions=True)
        defaults = parser(default_resources)
    resources = ResourceSettings(
        cores=None,
        default_resources=defaults,
        overwrite_resources=parse_set_resources(set_resources or []),
        overwrite_threads=parse_set_threads(set_threads or []),
    )
    previous = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings()) as api:
            workflow_api = api.workflow(
                resource_settings=resources,
                storage_settings=StorageSettings(shared_fs_usage=frozenset()),
                snakefile=workdir / "Snakefile",
                workdir=workdir,
            )
            workflow_api.dag()
            workflow = workflow_api._workflow
            plugin = types.SimpleNamespace(common_settings=common_settings)
            workflow._executor_plugin = plugin
            workflow._prepare_dag(
                forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True
            )
            workflow._build_dag()
            jobs: dict[str, list] = {}
            for job in workflow.dag.needrun_jobs():
                jobs.setdefault(job.rule.name, []).append(job)
            yield jobs
    finally:
        os.chdir(previous)


@pytest.fixture
def build_jobs():
    return snakemake_jobs


@pytest.fixture(autouse=True)
def _clean_muse_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SNAKEMAKE_MUSE_"):
            monkeypatch.delenv(name)
