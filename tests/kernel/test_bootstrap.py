"""Dependency bootstrap: pinned installs with internet, a how-to-fix message without."""

from __future__ import annotations

import pytest

from kernel_template.bootstrap import DependencyError, ensure_dependencies


def availability(missing: set[str]):
    return lambda name: name not in missing


def test_nothing_installed_when_everything_is_present():
    def install(requirements):
        raise AssertionError("must not install")

    assert (
        ensure_dependencies(
            is_available=availability(set()), has_internet=lambda: False, install=install
        )
        == []
    )


def test_missing_packages_are_installed_pinned_and_torch_never():
    installed: list[list[str]] = []
    present = {"torch", "numpy"}

    def install(requirements):
        installed.append(list(requirements))
        present.update({"stable_baselines3", "gymnasium"})

    result = ensure_dependencies(
        is_available=lambda n: n in present, has_internet=lambda: True, install=install
    )
    assert installed == [["stable-baselines3==2.9.2", "gymnasium==1.4.0"]]
    assert result == installed[0]
    assert not any("torch" in r for r in installed[0])


def test_offline_failure_says_how_to_fix_it():
    with pytest.raises(DependencyError) as error:
        ensure_dependencies(
            is_available=availability({"gymnasium"}),
            has_internet=lambda: False,
            install=lambda r: None,
        )
    message = str(error.value)
    assert "gymnasium" in message and "enable internet" in message and "dataset" in message


def test_missing_torch_is_not_installed_but_explained():
    with pytest.raises(DependencyError, match="never installs torch"):
        ensure_dependencies(
            is_available=availability({"torch"}), has_internet=lambda: True, install=lambda r: None
        )
