"""The session summary's `versions`: libraries, plus the Kaggle image only when Kaggle names it."""

from __future__ import annotations

import platform

from kernel_template.runtime import DOCKER_IMAGE_ENV, library_versions


def test_docker_image_is_recorded_only_when_set_and_no_other_variable(monkeypatch) -> None:
    monkeypatch.delenv(DOCKER_IMAGE_ENV, raising=False)
    monkeypatch.setenv("KAGGLE_KEY", "never-recorded")
    without = library_versions()
    assert without["python"] == platform.python_version() and "numpy" in without
    assert "docker_image" not in without
    assert "never-recorded" not in without.values()

    image = "gcr.io/kaggle-images/python@sha256:" + "d" * 64
    monkeypatch.setenv(DOCKER_IMAGE_ENV, image)
    assert library_versions() == {**without, "docker_image": image}
