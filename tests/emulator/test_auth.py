"""Credentials, privacy between users, and the test API's guard."""

from __future__ import annotations

import httpx

from orchestrator.emulator.testing import start_emulator
from tests.support.emulator import DENIED


def test_wrong_key_is_401(emu):
    response = httpx.post(
        f"{emu.api_url}/kernels.KernelsApiService/ListKernels",
        json={},
        auth=("alice", "wrong"),
    )
    assert response.status_code == 401


def test_private_kernel_is_denied_to_another_user_as_if_missing(alice, bob):
    alice.push("alice-private", "print('secret')\n")
    alice.wait("alice-private")
    for slug in ("alice-private", "no-such-kernel"):  # the same answer: existence never shows
        for method in ("GetKernelSessionStatus", "ListKernelSessionOutput", "GetKernel"):
            response = bob.call(method, {"userName": "alice", "kernelSlug": slug})
            assert (response.status_code, response.json()) == (403, DENIED), (slug, method)
        stream = bob.http.get(f"/kernels/logs/stream/alice/{slug}")
        assert (stream.status_code, stream.json()) == (403, DENIED)
        deleted = bob.call("DeleteKernel", {"userName": "alice", "kernelSlug": slug})
        assert deleted.status_code == 403
        assert deleted.json() == {"code": 403, "message": "Permission 'kernels.delete' was denied"}
    assert bob.call("ListKernels", {"user": "alice"}).json().get("kernels", []) == []
    assert alice.status("alice-private")["status"] == "COMPLETE"


def test_pushing_to_another_users_slug_is_refused(alice, bob):
    alice.push("alice-owned", "print(1)\n")
    response = bob.call(
        "SaveKernel",
        {
            "slug": "alice/alice-owned",
            "text": "print(2)\n",
            "language": "python",
            "kernelType": "script",
        },
    )
    assert response.status_code == 403


def test_delete_kernel(alice):
    alice.push("to-delete", "import time\ntime.sleep(120)\n")
    alice.wait("to-delete", statuses=("RUNNING",))
    assert (
        alice.call("DeleteKernel", {"userName": "alice", "kernelSlug": "to-delete"}).status_code
        == 200
    )
    gone = alice.call("GetKernel", {"userName": "alice", "kernelSlug": "to-delete"})
    assert (gone.status_code, gone.json()) == (403, DENIED)
    again = alice.call("DeleteKernel", {"userName": "alice", "kernelSlug": "to-delete"})
    assert again.status_code == 403


def test_test_api_is_off_unless_enabled(tmp_path):
    with start_emulator(tmp_path / "emu", {"alice": "k"}, test_api=False) as emulator:
        assert httpx.get(f"{emulator.base_url}/_emulator/calls").status_code == 404
        assert httpx.get(f"{emulator.base_url}/_emulator/health").status_code == 200


def test_env_points_at_the_emulator(emu):
    env = emu.env("bob")
    assert env["ORCHESTRATE_KAGGLE_API"] == emu.api_url
    assert (env["KAGGLE_USERNAME"], env["KAGGLE_KEY"]) == ("bob", emu.users["bob"])
    assert env["KAGGLE_API_TOKEN"] == ""
    assert list(__import__("pathlib").Path(env["KAGGLE_CONFIG_DIR"]).iterdir()) == []
