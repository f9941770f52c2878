"""The three objects Snakemake's plugin registry looks for.

Snakemake imports every installed executor plugin on every run, even a local
``snakemake -n``: importing this package must be cheap and must never fail. The
executor module is therefore imported defensively: if one of its dependencies is
broken, Snakemake still starts, and only ``--executor muse`` reports the problem.
"""

from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

from snakemake_executor_muse.settings import ExecutorSettings, common_settings

try:
    from snakemake_executor_muse.executor import Executor
except ImportError as _import_error:  # pragma: no cover - broken installs only
    _REASON = f"{type(_import_error).__name__}: {_import_error}"

    class Executor(RemoteExecutor):  # type: ignore[no-redef]
        """Stands in when the real executor cannot be imported."""

        def __new__(cls, *args, **kwargs):
            from snakemake_interface_common.exceptions import WorkflowError

            raise WorkflowError(
                "The Muse executor plugin is installed but cannot be loaded "
                f"({_REASON}). Reinstall snakemake-executor-plugin-muse with its "
                "dependencies (pip install snakemake-executor-plugin-muse)."
            )


__all__ = ["Executor", "ExecutorSettings", "common_settings"]
