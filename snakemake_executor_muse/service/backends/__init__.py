"""Choosing a backend by name: ``local``, ``slurm``, or ``auto``.

``auto`` is ``slurm`` when ``sbatch`` is on PATH, else ``local``. The SLURM backend is
imported only when asked for, so that a laptop without SLURM never loads it.
"""

import inspect
import logging
import shutil
from typing import Any

from .base import Backend

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("local", "slurm", "auto")


class UnknownBackend(ValueError):
    """A backend name other than local, slurm or auto."""


def resolve_backend_name(name: str) -> str:
    """``auto`` -> ``slurm`` or ``local``; other names checked and returned."""
    if name not in BACKEND_NAMES:
        raise UnknownBackend(
            f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)} "
            "(muse serve --backend)"
        )
    if name == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return name


def make_backend(name: str, **options: Any) -> Backend:
    """Build the backend called ``name`` with the options it understands.

    Options a backend's constructor does not take are left out (the local backend's
    ``cpus`` means nothing to SLURM), so callers may pass one set of options.
    """
    resolved = resolve_backend_name(name)
    if resolved == "local":
        from .local import LocalBackend

        return LocalBackend(**_accepted(LocalBackend, options))
    from .slurm import SlurmBackend

    return SlurmBackend(**_accepted(SlurmBackend, options))  # type: ignore[no-any-return]


def _accepted(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    kept = {key: value for key, value in options.items() if key in parameters}
    dropped = sorted(set(options) - set(kept))
    if dropped:
        logger.debug("%s does not take the options %s", cls.__name__, dropped)
    return kept
