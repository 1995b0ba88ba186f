"""Chain test fixtures: `chain_project(emulator, **toml_options)`."""

from __future__ import annotations

import pytest

from orchestrator.emulator.testing import EmulatorHandle
from tests.support.emulator import use_emulator_env
from tests.support.project import ChainProject, project_toml


@pytest.fixture
def chain_project(tmp_path, monkeypatch):
    """`chain_project(emulator, **toml_options)` -> a ChainProject whose client env is alice's."""

    def make(emulator: EmulatorHandle, name: str = "project", **options) -> ChainProject:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "orchestrate.toml").write_text(project_toml(emulator.api_url, **options))
        use_emulator_env(monkeypatch, emulator, directory)
        return ChainProject(directory, emulator)

    return make
