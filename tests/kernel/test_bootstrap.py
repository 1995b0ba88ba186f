"""Dependency bootstrap: nothing installed unless asked, a one-line fix when a module is missing."""

from __future__ import annotations

import pytest

from kernel_template.bootstrap import DependencyError, ensure_dependencies


def availability(missing: set[str]):
    return lambda name: name not in missing


def refuse_install(requirements):
    raise AssertionError("must not install")


def test_nothing_installed_when_everything_is_present():
    assert (
        ensure_dependencies(
            is_available=availability(set()), has_internet=lambda: True, install=refuse_install
        )
        == []
    )


def test_a_missing_module_is_never_installed_unasked_and_the_fix_is_named():
    with pytest.raises(DependencyError) as error:
        ensure_dependencies(
            is_available=availability({"stable_baselines3"}),
            has_internet=lambda: True,  # even with internet
            install=refuse_install,
        )
    message = str(error.value)
    assert "\n" not in message
    assert "stable_baselines3" in message
    assert "user_modules" in message and "pip_install" in message


def test_pip_install_installs_exactly_what_the_user_asked_for():
    installed: list[list[str]] = []
    present = {"torch", "numpy"}

    def install(requirements):
        installed.append(list(requirements))
        present.add("sumo_rl")

    result = ensure_dependencies(
        pip_requirements=["sumo-rl==1.4.5"],
        is_available=lambda n: n in present,
        has_internet=lambda: True,
        install=install,
        required=("torch", "numpy", "sumo_rl"),
    )
    assert installed == [["sumo-rl==1.4.5"]] and result == ["sumo-rl==1.4.5"]


def test_pip_install_without_internet_says_how_to_fix_it():
    with pytest.raises(DependencyError) as error:
        ensure_dependencies(
            pip_requirements=["sumo-rl"],
            is_available=availability(set()),
            has_internet=lambda: False,
            install=refuse_install,
        )
    assert "enable_internet" in str(error.value) and "sumo-rl" in str(error.value)


def test_missing_torch_is_not_installed_but_explained():
    with pytest.raises(DependencyError, match="never installs torch"):
        ensure_dependencies(
            is_available=availability({"torch"}), has_internet=lambda: True, install=refuse_install
        )
