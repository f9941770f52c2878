"""Fixtures of the end-to-end tests."""

import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def workflow(tmp_path):
    """Write a Snakefile (dedented) into a fresh folder and return the folder."""

    def write(snakefile: str, **files: str) -> Path:
        (tmp_path / "Snakefile").write_text(textwrap.dedent(snakefile))
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return tmp_path

    return write
