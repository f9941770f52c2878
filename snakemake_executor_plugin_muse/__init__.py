"""Discovery shim: Snakemake finds executor plugins by this import name only.

The plugin itself lives in ``snakemake_executor_muse``; this package re-exports the
three objects Snakemake's registry looks for and nothing else.
"""

from snakemake_executor_muse import Executor, ExecutorSettings, common_settings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
