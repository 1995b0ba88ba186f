"""Chain test fixtures: `chain_project(emulator, **toml_options)`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # --import-mode=importlib does not add test folders to sys.path
    sys.path.insert(0, HERE)

from chain_helpers import ChainProject, project_toml  # noqa: E402

from orchestrator.emulator.testing import EmulatorHandle  # noqa: E402


@pytest.fixture
def chain_project(tmp_path, monkeypatch):
    """`chain_project(emulator, **toml_options)` -> a ChainProject whose client env is alice's."""

    def make(emulator: EmulatorHandle, name: str = "project", **options) -> ChainProject:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "orchestrate.toml").write_text(project_toml(emulator.api_url, **options))
        for key, value in emulator.env("alice").items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
        monkeypatch.chdir(directory)
        return ChainProject(directory, emulator)

    return make
