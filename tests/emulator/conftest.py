"""Emulator tests share one emulator per module, and talk to it through raw-httpx `Rpc`s."""

from __future__ import annotations

import pytest

from orchestrator.emulator.testing import EmulatorHandle, start_emulator
from tests.support.emulator import TEST_USERS, Rpc


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory) -> EmulatorHandle:
    """One emulator per test module (starting one costs a second or more on a busy machine).

    Tests on it use unique slugs and count calls as differences.
    """
    root = tmp_path_factory.mktemp("shared-emulator") / "root"
    with start_emulator(root, TEST_USERS) as handle:
        yield handle


@pytest.fixture
def emu(shared_emulator) -> EmulatorHandle:
    """The module's shared emulator, with faults cleared after each test."""
    yield shared_emulator
    shared_emulator.clear_faults()


@pytest.fixture
def alice(emu) -> Rpc:
    rpc = Rpc(emu, "alice")
    yield rpc
    rpc.close()


@pytest.fixture
def bob(emu) -> Rpc:
    rpc = Rpc(emu, "bob")
    yield rpc
    rpc.close()
