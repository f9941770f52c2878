"""The plugin's settings: ``ExecutorSettings`` (``--muse-*``) and ``common_settings``.

No ``from __future__ import annotations`` in this module: Snakemake builds its
command line from these dataclass field types, and string annotations (or the
``X | None`` form) break argparse for every Snakemake run in the environment.
That is also why the fields use ``Optional[...]`` with a ``noqa`` for ruff's UP045.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_executor_plugins.settings import (
    CommonSettings,
    ExecutorSettingsBase,
)

MODES = ("auto", "shell", "snakemake")
LOCAL_BACKENDS = ("local", "slurm", "auto")


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """Settings of ``snakemake --executor muse`` (CLI ``--muse-<name>``)."""

    url: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "API root of the Muse service, e.g. http://HOST/api/. "
            "Not set: the plugin starts a local Muse-compatible service on "
            "127.0.0.1 for this run.",
            "env_var": False,
            "required": False,
        },
    )
    jwt: Optional[str] = field(  # noqa: UP045
        default=None,
        repr=False,
        metadata={
            "help": "A Muse JWT. Prefer the environment variable SNAKEMAKE_MUSE_JWT "
            "so that it never appears in a process list.",
            "env_var": True,
            "required": False,
        },
    )
    username: Optional[str] = field(  # noqa: UP045
        default=None,
        repr=False,
        metadata={
            "help": "Muse user name, used with the password to obtain and renew "
            "a JWT through jwt/obtain.",
            "env_var": True,
            "required": False,
        },
    )
    password: Optional[str] = field(  # noqa: UP045
        default=None,
        repr=False,
        metadata={
            "help": "Muse password. Prefer the environment variable "
            "SNAKEMAKE_MUSE_PASSWORD.",
            "env_var": True,
            "required": False,
        },
    )
    software: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Muse software that runs shell rules which set no "
            "'muse_software' resource.",
            "env_var": False,
            "required": False,
        },
    )
    snakemake_software: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Muse software with Python and Snakemake, for rules that "
            "need snakemake mode (run:, script:, wrapper:, notebook:).",
            "env_var": False,
            "required": False,
        },
    )
    mode: str = field(
        default="auto",
        metadata={
            "help": "auto: shell mode for shell rules, snakemake mode for the "
            "others; shell or snakemake: force one mode for every job.",
            "choices": list(MODES),
            "env_var": False,
            "required": False,
        },
    )
    request_timeout: int = field(
        default=60,
        metadata={
            "help": "Seconds to wait for one HTTP request before it counts as a "
            "transient failure.",
            "env_var": False,
            "required": False,
        },
    )
    local_catalog: Optional[Path] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Software catalog (YAML) for the local service started when "
            "no --muse-url is given. Not set: the local service runs any "
            "software name on the host.",
            "env_var": False,
            "required": False,
        },
    )
    local_backend: str = field(
        default="local",
        metadata={
            "help": "Where the local service started when no --muse-url is given "
            "runs the jobs: local (processes on this machine), slurm (sbatch to "
            "the SLURM cluster this machine submits to) or auto (slurm when "
            "sbatch is on PATH, else local).",
            "choices": list(LOCAL_BACKENDS),
            "env_var": False,
            "required": False,
        },
    )
    status_error_grace: int = field(
        default=1800,
        metadata={
            "help": "Seconds during which consecutive transient errors while "
            "following a job (timeouts, 5xx, resets) are tolerated before the "
            "job is failed.",
            "env_var": False,
            "required": False,
        },
    )
    unknown_state_grace: int = field(
        default=600,
        metadata={
            "help": "Seconds a job may report a state value the plugin does not "
            "know before it is failed.",
            "env_var": False,
            "required": False,
        },
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=True,
    job_deploy_sources=False,
    pass_default_storage_provider_args=False,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
    pass_group_args=True,
    can_transfer_local_files=True,
)
