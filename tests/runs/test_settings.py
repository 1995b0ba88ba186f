"""orchestrate.toml: found upward, validated into one-line errors, overridden by flags."""

from __future__ import annotations

import pytest
import tomllib

from kernel_template.config import RunConfig
from kernel_template.kaggle_limits import KAGGLE_SESSION_LIMIT_S
from orchestrator.capacity import SESSION_LIMIT_S
from orchestrator.errors import UserError
from orchestrator.settings import (
    apply_overrides,
    canonical_machine_shape,
    find_config_file,
    load_settings,
    retired_shape_warning,
    settings_from_dict,
    starter_toml,
    with_kernel_overrides,
)


def test_config_is_found_in_a_parent_directory(tmp_path):
    (tmp_path / "orchestrate.toml").write_text('[kernel]\nslug = "found-upward"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config_file(deep) == tmp_path / "orchestrate.toml"
    settings = load_settings(cwd=deep)
    assert settings.kernel.slug == "found-upward"
    assert settings.project_dir == tmp_path.resolve()


def test_no_config_gives_defaults_in_cwd(tmp_path):
    settings = load_settings(cwd=tmp_path)
    assert settings.config_path is None
    assert settings.project_dir == tmp_path.resolve()
    assert settings.run.algo == "DQN"


def test_missing_explicit_config_is_bad_input(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"run": {"algoo": "PPO"}}, "unknown key 'algoo'"),
        ({"run": {"total_timesteps": 0}}, "total_timesteps"),
        ({"kernel": {"slug": "ab"}}, "shorter than 5"),
        ({"kernel": {"slug": "Bad_Slug"}}, "try 'bad-slug'"),
        ({"kernel": {"title": "Hi"}}, "title"),
        ({"kernel": {"accelerator": "GPU"}}, "unknown accelerator 'GPU'"),
        ({"kernel": {"colour": "red"}}, "unknown key 'kernel.colour'"),
        ({"runn": {}}, "unknown section [runn]"),
    ],
)
def test_bad_settings_give_one_line_naming_the_problem(data, needle):
    with pytest.raises(UserError) as caught:
        settings_from_dict(data)
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message


def test_invalid_toml_is_bad_input(tmp_path):
    path = tmp_path / "orchestrate.toml"
    path.write_text("[kernel\nslug=")
    with pytest.raises(UserError, match="not valid TOML"):
        load_settings(path)


def test_accelerator_names_are_canonical_and_retired_ones_warn():
    assert canonical_machine_shape("nvidiateslat4") == "NvidiaTeslaT4"
    assert canonical_machine_shape("none") is None
    assert canonical_machine_shape("tpuv5e8") == "TpuV5E8"
    assert retired_shape_warning(canonical_machine_shape("NvidiaTeslaP100")).startswith("warning:")
    assert retired_shape_warning("NvidiaTeslaT4") is None


def test_set_overrides_reach_every_section():
    settings = settings_from_dict({"kernel": {"slug": "base-run"}})
    changed = apply_overrides(
        settings,
        [
            "run.total_timesteps=2000",
            "run.policy_kwargs.net_arch=[8, 8]",
            "kernel.accelerator=none",
        ],
    )
    assert changed.run.total_timesteps == 2000
    assert changed.run.policy_kwargs == {"net_arch": [8, 8]}
    assert changed.kernel.machine_shape is None
    with pytest.raises(UserError, match="section.key=value"):
        apply_overrides(settings, ["total_timesteps"])
    with pytest.raises(UserError, match="unknown key 'nope'"):
        apply_overrides(settings, ["run.nope=1"])


def test_flags_override_the_file():
    settings = settings_from_dict({"kernel": {"slug": "from-file", "accelerator": "NvidiaTeslaT4"}})
    changed = with_kernel_overrides(settings, slug="from-flag", machine_shape="none", owner="bob")
    assert (changed.kernel.slug, changed.kernel.machine_shape, changed.kaggle.owner) == (
        "from-flag",
        None,
        "bob",
    )
    unchanged = with_kernel_overrides(settings, slug=None)
    assert unchanged.kernel.slug == "from-file"


def test_starter_file_parses_into_settings():
    text = starter_toml("ppo-traffic")
    settings = settings_from_dict(tomllib.loads(text))
    assert settings.kernel.slug == "ppo-traffic"
    assert settings.kernel.machine_shape == "NvidiaTeslaT4"
    assert settings.kernel.docker_image_pinning_type == "original"


def test_the_session_limit_is_one_constant_for_starter_file_kernel_and_capacity():
    starter = tomllib.loads(starter_toml("ppo-traffic"))["run"]["session_limit_s"]
    assert starter == RunConfig().session_limit_s == SESSION_LIMIT_S == KAGGLE_SESSION_LIMIT_S
    assert KAGGLE_SESSION_LIMIT_S == 12 * 3600
