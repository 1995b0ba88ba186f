"""The run config: validation errors, the config hash and field diffs."""

import json

import pytest
from pydantic import ValidationError

from kernel_template.config import (
    ConfigError,
    RunConfig,
    changes_allowed,
    diff_result_fields,
    load_run_config,
    parse_run_config,
)


def test_default_config_round_trips_through_json():
    config = RunConfig()
    again = parse_run_config(json.loads(config.model_dump_json()))
    assert again == config
    assert again.config_hash() == config.config_hash()


def test_unknown_key_and_bad_value_are_named_in_one_line():
    with pytest.raises(ConfigError) as info:
        parse_run_config({"algo": "XYZ", "checkpoint_evry": 10})
    message = str(info.value)
    assert "\n" not in message
    assert "'checkpoint_evry'" in message and "algo" in message


def test_hash_ignores_budget_logging_and_segment_fields():
    base = RunConfig()
    changed = RunConfig(
        session_limit_s=600,
        checkpoint_every=7,
        segment_timesteps=1000,
        segment_index=3,
        logging={"progress_every_s": 1},
        device="cpu",
    )
    assert changed.config_hash() == base.config_hash()


@pytest.mark.parametrize(
    "field,value",
    [("seed", 1), ("algo", "PPO"), ("total_timesteps", 5), ("hyperparams", {"gamma": 0.9})],
)
def test_hash_covers_result_fields(field, value):
    assert RunConfig(**{field: value}).config_hash() != RunConfig().config_hash()


def test_diff_names_nested_fields_and_allow_list_covers_subfields():
    a = RunConfig(hyperparams={"learning_rate": 1e-3}).result_fields()
    b = RunConfig(hyperparams={"learning_rate": 5e-4}, seed=2).result_fields()
    differing = diff_result_fields(a, b)
    assert differing == ["hyperparams.learning_rate", "seed"]
    assert changes_allowed(differing, ["hyperparams"]) == ["seed"]
    assert changes_allowed(differing, ["hyperparams.learning_rate", "seed"]) == []


def test_reserved_hyperparams_and_segment_larger_than_total_are_refused():
    with pytest.raises(ConfigError, match="seed"):
        parse_run_config({"hyperparams": {"seed": 3}})
    with pytest.raises(ConfigError, match="segment_timesteps"):
        parse_run_config({"total_timesteps": 10, "segment_timesteps": 11})


def test_user_env_must_name_module_and_class():
    assert parse_run_config({"env": "my_envs.grid:GridEnv"}).env == "my_envs.grid:GridEnv"
    with pytest.raises(ConfigError, match="package.module:Class"):
        parse_run_config({"env": "my envs:"})


def test_load_run_config_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_run_config(bad)


def test_budget_and_lineage_fields_stay_out_of_the_hash():
    from kernel_template.config import ParentRef

    base = RunConfig()
    parent = ParentRef(owner="alice", slug="run-s1", manifest_sha256="a" * 64, step=1000)
    changed = RunConfig(
        parent=parent, parent_wait_s=5, min_margin_s=60, session_limit_s=3600, segment_index=2
    )
    assert changed.config_hash() == base.config_hash()
    assert "parent" not in changed.result_fields()
    assert RunConfig.model_validate(changed.model_dump(mode="json")).parent == parent


def test_margin_floor_defaults_to_a_48th_of_the_session():
    assert RunConfig().min_margin_s is None
    assert RunConfig().margin_floor_s == 900.0
    assert RunConfig(session_limit_s=600).margin_floor_s == 12.5
    assert RunConfig(min_margin_s=0).margin_floor_s == 0.0


@pytest.mark.parametrize(
    "parent",
    [
        {"owner": "a/b", "slug": "run-s1", "manifest_sha256": "a" * 64, "step": 1},
        {"owner": "alice", "slug": "..", "manifest_sha256": "a" * 64, "step": 1},
        {"owner": "alice", "slug": "run-s1", "manifest_sha256": "xyz", "step": 1},
        {"owner": "alice", "slug": "run-s1", "manifest_sha256": "a" * 64, "step": -1},
    ],
)
def test_a_bad_parent_is_refused(parent):
    with pytest.raises(ValidationError):
        RunConfig(parent=parent)


def test_trainer_is_sb3_by_default_and_loop_when_an_entrypoint_is_named():
    assert parse_run_config({"trainer": "sb3"}).trainer == "sb3"
    loop = parse_run_config({"entrypoint": "mylib.loop:train", "params": {"lr": 0.1}})
    assert loop.trainer == "loop"
    assert parse_run_config(json.loads(loop.model_dump_json())) == loop
    # Naming the trainer changes nothing the hash covers: SB3 hashes stay as they were.
    assert parse_run_config({"trainer": "sb3"}).config_hash() == RunConfig().config_hash()


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"trainer": "loop"}, "needs entrypoint"),
        ({"trainer": "sb3", "entrypoint": "mylib.loop:train"}, "is a user loop"),
    ],
)
def test_a_trainer_that_contradicts_the_entrypoint_is_refused(data, named):
    with pytest.raises(ConfigError) as info:
        parse_run_config(data)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_with_changes_validates_the_copy_once() -> None:
    """A derived config (a quick test, a chain's total) is checked as it is made."""
    config = RunConfig(total_timesteps=1000)
    shorter = config.with_changes(total_timesteps=500, segment_timesteps=None)
    assert shorter.total_timesteps == 500 and shorter.config_hash() != config.config_hash()
    with pytest.raises(ValidationError, match="segment_timesteps is larger"):
        config.with_changes(segment_timesteps=2000)
    with pytest.raises(ValidationError):
        config.with_changes(n_envs=0)
