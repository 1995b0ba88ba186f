"""The image a session runs on: SaveKernel's dockerImage, pinning, KAGGLE_DOCKER_IMAGE."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.emulator.api import default_docker_image
from orchestrator.emulator.testing import start_emulator
from tests.support.emulator import TEST_USERS, Rpc, user_files

PINNED = "gcr.io/kaggle-images/python@sha256:" + "a" * 64
RETIRED_PIN_REPLACEMENT = "gcr.io/kaggle-images/python@sha256:" + "b" * 64
REPORT_IMAGE = (
    "import os\nopen('image.txt', 'w').write(os.environ.get('KAGGLE_DOCKER_IMAGE', ''))\n"
)


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory):
    """This module's emulator knows PINNED (--known-images), as Kaggle knows its old images."""
    root = tmp_path_factory.mktemp("image-emulator") / "root"
    with start_emulator(root, TEST_USERS, known_images=[PINNED]) as handle:
        yield handle


def _image_seen_by_kernel(rpc: Rpc, slug: str) -> str:
    assert rpc.wait(slug)["status"] == "COMPLETE"
    (item,) = user_files(rpc.output(slug))
    return httpx.get(item["url"]).text


def _reported_image(rpc: Rpc, slug: str, version: int | None = None) -> str | None:
    body = {"userName": rpc.user, "kernelSlug": slug}
    if version is not None:
        body["versionLabel"] = f"v{version}"
    response = rpc.call("GetKernel", body)
    response.raise_for_status()
    return response.json()["metadata"].get("dockerImage")


def test_unpinned_push_runs_on_the_default_image(emu, alice):
    alice.push("image-default", REPORT_IMAGE)
    default = default_docker_image()
    assert default.startswith("gcr.io/kaggle-images/python@sha256:")
    assert _image_seen_by_kernel(alice, "image-default") == default
    assert _reported_image(alice, "image-default") == default
    (version,) = emu.kernel_versions("alice", "image-default")
    assert version["pushed_docker_image"] is None and version["docker_image"] == default


def test_docker_image_is_stored_per_version_and_original_pinning_keeps_it(emu, alice):
    alice.push("image-pinned", REPORT_IMAGE, dockerImage=PINNED)
    assert _image_seen_by_kernel(alice, "image-pinned") == PINNED
    # "original" without an image keeps the slug's image; "latest" moves to the default.
    alice.push("image-pinned", REPORT_IMAGE, dockerImagePinningType="original")
    assert _image_seen_by_kernel(alice, "image-pinned") == PINNED
    alice.push("image-pinned", REPORT_IMAGE, dockerImagePinningType="latest")
    assert _image_seen_by_kernel(alice, "image-pinned") == default_docker_image()

    versions = emu.kernel_versions("alice", "image-pinned")
    assert [v["pushed_docker_image"] for v in versions] == [PINNED, None, None]
    assert [v["docker_image"] for v in versions] == [PINNED, PINNED, default_docker_image()]
    assert _reported_image(alice, "image-pinned", version=1) == PINNED
    assert _reported_image(alice, "image-pinned") == default_docker_image()


def test_forced_image_overrides_the_pin_until_cleared(emu, alice):
    emu.force_docker_image(RETIRED_PIN_REPLACEMENT)
    try:
        alice.push("image-forced", REPORT_IMAGE, dockerImage=PINNED)
        assert _image_seen_by_kernel(alice, "image-forced") == RETIRED_PIN_REPLACEMENT
    finally:
        emu.force_docker_image(None)
    alice.push("image-forced", REPORT_IMAGE, dockerImage=PINNED)
    assert _image_seen_by_kernel(alice, "image-forced") == PINNED
    versions = emu.kernel_versions("alice", "image-forced")
    assert [v["pushed_docker_image"] for v in versions] == [PINNED, PINNED]
    assert [v["docker_image"] for v in versions] == [RETIRED_PIN_REPLACEMENT, PINNED]
