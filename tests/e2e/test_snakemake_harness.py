"""Snakemake's own executor test suite (`simple`, `groups`) on the embedded service."""

import pytest
from snakemake.common.tests import TestWorkflowsLocalStorageBase

from snakemake_executor_muse import ExecutorSettings

pytestmark = pytest.mark.e2e


class TestSnakemakeSuite(TestWorkflowsLocalStorageBase):
    __test__ = True
    latency_wait = 0

    def get_executor(self) -> str:
        return "muse"

    def get_executor_settings(self) -> ExecutorSettings:
        return ExecutorSettings()

    def get_assume_shared_fs(self) -> bool:
        return False
