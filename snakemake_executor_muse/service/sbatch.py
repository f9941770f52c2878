"""Parsing and checking of a run request's ``sbatch_list`` and ``module_list``.

The API documents neither element format, so this module accepts every form a user
is likely to write (``time=10``, ``--time=10``, ``--time 10``, ``["--time", "10"]``,
``-t 10``) and normalises it to ``(long-name, value)`` pairs that a backend can turn
into sbatch arguments (never a shell string). Options the service sets itself (the
job's folder, its output files, its name, ...) are refused, so that a job cannot
write its logs elsewhere or escape its run folder.
"""

import re
from collections.abc import Iterable

from snakemake_executor_muse.sbatch_options import (
    FLAG_OPTIONS,
    SHORT_OPTIONS,
)
from snakemake_executor_muse.sbatch_options import (
    SERVICE_OWNED_OPTIONS as OWNED_OPTIONS,
)

_LONG_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.+/@:,-]+$")
_TIME_PATTERNS = (
    # (regex, names of the groups in order): SLURM's accepted --time forms
    re.compile(r"^(?P<minutes>\d+)$"),
    re.compile(r"^(?P<minutes>\d+):(?P<seconds>\d+)$"),
    re.compile(r"^(?P<hours>\d+):(?P<minutes>\d+):(?P<seconds>\d+)$"),
    re.compile(r"^(?P<days>\d+)-(?P<hours>\d+)$"),
    re.compile(r"^(?P<days>\d+)-(?P<hours>\d+):(?P<minutes>\d+)$"),
    re.compile(r"^(?P<days>\d+)-(?P<hours>\d+):(?P<minutes>\d+):(?P<seconds>\d+)$"),
)
_UNLIMITED = frozenset({"unlimited", "infinite", "infinity"})

ACCEPTED_FORMS = [
    "accepted sbatch_list element forms: 'option=value', '--option=value', "
    "'--option value', '--option' followed by 'value' as the next element, "
    "'-t 10' (short options -t -p -c -A -q -C -N -n -G ...), and value-less "
    "flags such as '--exclusive'",
]


class SbatchOptionError(ValueError):
    """An element of sbatch_list or module_list that the service cannot accept."""

    def __init__(self, message: str, more: list[str] | None = None) -> None:
        super().__init__(message)
        self.more = list(more if more is not None else ACCEPTED_FORMS)


def parse_sbatch_list(elements: Iterable[str]) -> list[tuple[str, str]]:
    """Normalise sbatch_list elements to ``(long-name, value)`` pairs, checked.

    ``mail-type`` defaults to ``ALL`` when ``mail-user`` is given without it, as the
    Muse documentation says.
    """
    pending = [str(element) for element in elements]
    options: list[tuple[str, str]] = []
    index = 0
    while index < len(pending):
        element = pending[index]
        _check_characters(element)
        name, value, needs_value = _split_element(element)
        _check_not_owned(element, name)
        if needs_value:
            if index + 1 >= len(pending) or pending[index + 1].startswith("-"):
                raise SbatchOptionError(
                    f"sbatch_list element {element!r}: --{name} needs a value and "
                    f"none follows; write it as '--{name}=VALUE'"
                )
            index += 1
            _check_characters(pending[index])
            value = pending[index].strip()
        options.append(_checked_option(element, name, value))
        index += 1
    if any(name == "mail-user" for name, _ in options) and not any(
        name == "mail-type" for name, _ in options
    ):
        options.append(("mail-type", "ALL"))
    return options


def _check_characters(element: str) -> None:
    if any(char in element for char in "\n\r\0"):
        raise SbatchOptionError(
            f"sbatch_list element {element!r} contains a newline or NUL character; "
            "give one option per element, on one line"
        )


def _split_element(element: str) -> tuple[str, str, bool]:
    """Return (long name, value, whether the value is the next element)."""
    text = element.strip()
    if not text or text in {"-", "--"}:
        raise SbatchOptionError(f"sbatch_list element {element!r} is empty")
    if text.startswith("--"):
        return _split_long(element, text[2:])
    if text.startswith("-"):
        return _split_short(element, text[1:])
    return _split_long(element, text)


def _split_long(element: str, text: str) -> tuple[str, str, bool]:
    if "=" in text:
        name, value = text.split("=", 1)
        return _long_name(element, name.strip()), value.strip(), False
    if " " in text or "\t" in text:
        name, value = text.split(None, 1)
        return _long_name(element, name), value.strip(), False
    name = _long_name(element, text)
    return name, "", name not in FLAG_OPTIONS


def _split_short(element: str, text: str) -> tuple[str, str, bool]:
    letter, rest = text[:1], text[1:].strip()
    if letter not in SHORT_OPTIONS:
        known = " ".join(f"-{short}" for short in SHORT_OPTIONS)
        raise SbatchOptionError(
            f"sbatch_list element {element!r}: unknown short option -{letter}; "
            "write the long form '--name=value'",
            [f"known short options: {known}", *ACCEPTED_FORMS],
        )
    name = SHORT_OPTIONS[letter]
    if rest.startswith("="):
        rest = rest[1:].strip()
    if rest:
        return name, rest, False
    return name, "", name not in FLAG_OPTIONS


def _long_name(element: str, name: str) -> str:
    if not _LONG_NAME.match(name):
        raise SbatchOptionError(
            f"sbatch_list element {element!r}: {name!r} is not an sbatch option name "
            "(expected lower-case letters, digits and dashes, e.g. 'time=10')"
        )
    return name


def _check_not_owned(element: str, name: str) -> None:
    if name in OWNED_OPTIONS:
        raise SbatchOptionError(
            f"sbatch_list element {element!r}: --{name} is set by the service "
            f"({OWNED_OPTIONS[name]}); remove it from sbatch_list",
            [f"options the service sets itself: {', '.join(sorted(OWNED_OPTIONS))}"],
        )


def _checked_option(element: str, name: str, value: str) -> tuple[str, str]:
    if name not in FLAG_OPTIONS and not value:
        raise SbatchOptionError(
            f"sbatch_list element {element!r}: --{name} needs a value, "
            f"e.g. '{name}=VALUE'"
        )
    if name == "time":
        time_limit_seconds(value, element)
    node_range = name == "nodes" and re.match(r"^\d+-\d+$", value)
    counted = name in {"cpus-per-task", "ntasks", "nodes"}
    if counted and not _positive_int(value) and not node_range:
        raise SbatchOptionError(
            f"sbatch_list element {element!r}: --{name} must be a positive "
            f"integer, got {value!r}"
        )
    return name, value


def _positive_int(value: str) -> bool:
    return value.isdigit() and int(value) > 0


def time_limit_seconds(value: str, element: str | None = None) -> int | None:
    """Seconds in a SLURM ``--time`` value; None for UNLIMITED.

    Forms: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
    """
    text = value.strip()
    if text.lower() in _UNLIMITED:
        return None
    for pattern in _TIME_PATTERNS:
        match = pattern.match(text)
        if match:
            parts = {name: int(number) for name, number in match.groupdict().items()}
            return (
                parts.get("days", 0) * 86400
                + parts.get("hours", 0) * 3600
                + parts.get("minutes", 0) * 60
                + parts.get("seconds", 0)
            )
    shown = element if element is not None else value
    raise SbatchOptionError(
        f"sbatch_list element {shown!r}: time {value!r} is not a SLURM time",
        [
            "accepted time forms: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, "
            "D-HH:MM:SS, UNLIMITED (e.g. 'time=90', 'time=01:30:00')"
        ],
    )


def parse_module_list(elements: Iterable[str]) -> list[str]:
    """Check environment module names; return them in order."""
    names = []
    for element in elements:
        name = str(element).strip()
        if not _MODULE_NAME.match(name):
            raise SbatchOptionError(
                f"module_list element {element!r} is not a module name (expected "
                "letters, digits and . _ + / @ : , - only, e.g. 'samtools/1.17')",
                ["module_list: one module name per element, loaded in order"],
            )
        names.append(name)
    return names


def option_value(options: Iterable[tuple[str, str]], name: str) -> str | None:
    """The last value given for ``name``, as sbatch would take it."""
    found = None
    for option, value in options:
        if option == name:
            found = value
    return found
