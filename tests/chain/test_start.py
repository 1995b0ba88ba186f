"""`chain start`: the run config and segment plan frozen into the ledger, and its input errors."""

from __future__ import annotations

import ast
import json

import pytest

from kernel_template.layout import SessionSummary, WallClock
from orchestrator.chain.start import parse_segments, start_chain
from orchestrator.chain.step import segment_run_config
from orchestrator.errors import UserError
from orchestrator.ledger import Ledger
from orchestrator.settings import settings_from_dict


def _settings(**chain):
    return settings_from_dict(
        {"run": {"total_timesteps": 24000, "session_limit_s": 3600}, "chain": chain}
    )


def test_explicit_segments_freeze_the_config(tmp_path) -> None:
    ledger = Ledger(tmp_path)
    record = start_chain(
        _settings(), ledger, "ppo-long", owner="alice", segments=parse_segments("12000, 12000")
    )
    assert record.segments == [12000, 12000] and record.total_timesteps == 24000
    config = segment_run_config(record, 2, 12000)
    assert (config.segment_index, config.segment_timesteps) == (2, 12000)
    assert config.config_hash() == record.config_hash
    assert ledger.get_chain("ppo-long").run_config["segment_timesteps"] is None


def test_a_segment_ships_only_the_fields_its_chain_started_with(tmp_path, monkeypatch) -> None:
    """A chain's runtime is frozen at `chain start`. An orchestrator upgraded mid-chain, whose
    RunConfig has gained a field since, must not send that field to the older runtime: its
    RunConfig forbids unknown fields, and the segment would fail on Kaggle."""
    from kernel_template.config import RunConfig, parse_run_config
    from orchestrator.build import render_script
    from orchestrator.chain import step

    record = start_chain(
        _settings(),
        Ledger(tmp_path),
        "ppo-long",
        owner="alice",
        segments=parse_segments("12000, 12000"),
    )

    class UpgradedRunConfig(RunConfig):
        future_knob: int = 7

    monkeypatch.setattr(step, "RunConfig", UpgradedRunConfig)
    config = step.segment_run_config(record, 2, 12000)
    assert isinstance(config, UpgradedRunConfig) and config.future_knob == 7
    script = render_script(config, ref="alice/ppo-long-s2", bundle=b"", user_modules=[], n_files=0)
    shipped = json.loads(_embedded_run_config(script))
    assert "future_knob" not in shipped
    frozen = parse_run_config(shipped)  # what the chain's own runtime reads
    assert (frozen.segment_index, frozen.segment_timesteps) == (2, 12000)
    assert frozen.config_hash() == record.config_hash


def _embedded_run_config(script: str) -> str:
    for node in ast.parse(script).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "RUN_CONFIG_JSON":
            return ast.literal_eval(node.value)
    raise AssertionError("the script embeds no RUN_CONFIG_JSON")


def test_count_size_and_chain_section(tmp_path) -> None:
    ledger = Ledger(tmp_path)
    assert start_chain(_settings(), ledger, "by-count", owner="a", count=5).segments == [4800] * 5
    assert (
        start_chain(_settings(), ledger, "by-size", owner="a", segment_timesteps=10000).segments
        == [8000] * 3
    )
    assert start_chain(_settings(segments=2), ledger, "by-toml", owner="a").segments == [
        12000,
        12000,
    ]


def test_plan_from_a_quick_test_summary(tmp_path) -> None:
    summary = SessionSummary(
        status="complete",
        reason="total_timesteps reached",
        config_hash="x",
        total_timesteps=1000,
        timesteps_start=0,
        timesteps_end=1000,
        wall=WallClock(setup=60, training=500, checkpointing=5, evaluation=10, finalization=5),
        seconds_per_step=0.5,
        started_at="2025-10-25T11:00:00Z",
        ended_at="2025-10-25T11:10:00Z",
        session_limit_s=3600,
        checkpoints_written=10,
    )
    path = tmp_path / "session_summary.json"
    path.write_text(summary.model_dump_json())
    record = start_chain(_settings(), Ledger(tmp_path), "planned", owner="a", plan_from=path)
    assert sum(record.segments) == 24000 and len(record.segments) > 1
    assert record.segment_seconds and all(s < 3600 for s in record.segment_seconds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segments": [1000, 1000], "total_timesteps": 5000}, "add up to 2000"),
        ({}, "no segment plan"),
        ({"count": 3, "name": "x" * 41}, "longer than 40"),
        ({"count": 3, "name": "Bad_Name"}, "lowercase"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, kwargs, message) -> None:
    name = kwargs.pop("name", "good-name")
    with pytest.raises(UserError, match=message):
        start_chain(_settings(), Ledger(tmp_path), name, owner="a", **kwargs)


def test_bad_segments_flag() -> None:
    with pytest.raises(UserError, match="comma-separated"):
        parse_segments("12k,12k")
    with pytest.raises(UserError, match="positive"):
        parse_segments("0,5")
