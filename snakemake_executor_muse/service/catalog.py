"""The software catalog: which names the service runs, and how.

Catalog YAML::

    softwares:
      samtools:
        desc: "SAM/BAM tools"
        keywords: [bam]
        urls: {home: "https://www.htslib.org"}
        run: host                     # runs `cmd` through bash on the host
      tool:
        image: /images/tool.sif       # runs `singularity exec ... tool.sif cmd`
        type: singularity
        cmd_option: "--cleanenv"      # used when a request gives no cmd_option
      sw_example:
        run: host
        service_python: true          # the service's Python first on PATH
        files: [add.py]               # copied into every run folder

Relative paths (``image``, ``files``) are taken from the catalog file's folder. A
``docker`` software needs a Singularity image built beforehand: the service never
pulls anything.
"""

import logging
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
DEFAULT_CATALOG = "default_catalog.yaml"


class CatalogError(Exception):
    """The catalog file cannot be used (a start-up error)."""


class UnknownSoftware(Exception):
    """A request names a software that is not in the catalog (404)."""

    def __init__(self, message: str, more: list[str] | None = None) -> None:
        super().__init__(message)
        self.more = more or []


@dataclass(frozen=True)
class Software:
    """One runnable software."""

    name: str
    desc: str = ""
    keywords: tuple[str, ...] = ()
    urls: dict[str, str] = field(default_factory=dict)
    #: None for a host software, else the Singularity image file
    image: Path | None = None
    cmd_option: str = ""
    files: tuple[Path, ...] = ()
    service_python: bool = False

    @property
    def on_host(self) -> bool:
        return self.image is None

    def listing(self) -> dict[str, Any]:
        """The documented ``GET software/list`` entry."""
        info = {
            "desc": self.desc,
            "shortname": self.name,
            "urls": dict(self.urls),
            "keywords": list(self.keywords),
        }
        return {"name": self.name, "info": {"sw": info}}


def container_tool() -> str:
    """``apptainer`` when installed under that name, else ``singularity``."""
    if shutil.which("apptainer"):
        return "apptainer"
    return "singularity"


def service_python_dir() -> Path:
    """The folder of the service's own Python (and of its Snakemake)."""
    return Path(sys.executable).parent


class Catalog:
    """Name -> Software, strict or (``any_software``) with a host fallback."""

    def __init__(self, softwares: dict[str, Software], any_software: bool) -> None:
        self._softwares = softwares
        self.any_software = any_software
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None, any_software: bool = False) -> "Catalog":
        """Read a catalog file; ``path`` None reads the packaged default catalog."""
        if path is None:
            text = resources.files(__package__).joinpath(DEFAULT_CATALOG).read_text()
            return cls(
                parse_catalog(text, Path.cwd(), "the default catalog"), any_software
            )
        try:
            text = path.read_text()
        except OSError as exc:
            raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
        return cls(parse_catalog(text, path.parent, str(path)), any_software)

    def names(self) -> list[str]:
        return sorted(self._softwares)

    def listing(self) -> list[dict[str, Any]]:
        return [self._softwares[name].listing() for name in self.names()]

    def get(self, name: str) -> Software:
        if not NAME_PATTERN.match(name):
            raise UnknownSoftware(
                f"{name!r} is not a software name (letters, digits, _ . + - only)",
                ["GET /api/software/list/ lists the softwares"],
            )
        if name in self._softwares:
            return self._softwares[name]
        if not self.any_software:
            raise UnknownSoftware(
                f"no software named {name!r} in this service's catalog",
                [
                    f"known softwares: {', '.join(self.names()) or 'none'}",
                    "add it to the catalog (muse serve --catalog FILE) or start the "
                    "service with --any-software to run any name on the host",
                ],
            )
        with self._lock:
            if name not in self._warned:
                self._warned.add(name)
                logger.warning(
                    "software %r is not in the catalog; running it on the host "
                    "(--any-software)",
                    name,
                )
        return Software(name=name, desc="run on the host (--any-software)")


def parse_catalog(text: str, base: Path, where: str) -> dict[str, Software]:
    """Parse catalog YAML; raise CatalogError naming the entry and what to change."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"{where} is not valid YAML: {exc}") from exc
    entries = data.get("softwares") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise CatalogError(
            f"{where}: expected 'softwares: {{NAME: {{...}}}}' at the top level"
        )
    return {
        str(name): _software(str(name), entry or {}, base, where)
        for name, entry in entries.items()
    }


def _software(name: str, entry: Any, base: Path, where: str) -> Software:
    if not NAME_PATTERN.match(name):
        raise CatalogError(f"{where}: {name!r} is not a software name")
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: software {name!r} must be a mapping")
    files = tuple(_existing(base, item, name, where) for item in entry.get("files", []))
    return Software(
        name=name,
        desc=str(entry.get("desc", "")),
        keywords=tuple(str(word) for word in entry.get("keywords", [])),
        urls={str(k): str(v) for k, v in (entry.get("urls") or {}).items()},
        image=_image(name, entry, base, where),
        cmd_option=str(entry.get("cmd_option", "") or ""),
        files=files,
        service_python=bool(entry.get("service_python", False)),
    )


def _image(name: str, entry: dict[str, Any], base: Path, where: str) -> Path | None:
    kind = str(entry.get("type", "host" if "image" not in entry else "singularity"))
    if entry.get("run") == "host" or kind == "host":
        return None
    image = entry.get("image")
    sif = image and str(image).endswith((".sif", ".simg", ".img"))
    if kind == "docker" and not sif:
        raise CatalogError(
            f"{where}: software {name!r} is of type docker (image {image!r}), but "
            "this service runs only Singularity image files and never pulls images. "
            f"Build one with '{container_tool()} build {name}.sif docker://{image}' "
            f"and give 'image: /path/{name}.sif' with 'type: singularity'"
        )
    if kind not in {"singularity", "docker"}:
        raise CatalogError(
            f"{where}: software {name!r} has type {kind!r}; expected 'singularity' "
            "(with image: FILE.sif) or 'run: host'"
        )
    if not image:
        raise CatalogError(
            f"{where}: software {name!r} needs 'image: FILE.sif' or 'run: host'"
        )
    return _existing(base, image, name, where)


def _existing(base: Path, item: Any, name: str, where: str) -> Path:
    path = (base / str(item)).resolve()
    if not path.exists():
        raise CatalogError(
            f"{where}: software {name!r} refers to {path}, which does not exist"
        )
    return path
