"""The preflight checklist: each check passes or fails for the reason it names."""

from __future__ import annotations

import json

from kernel_template.layout import SessionSummary, WallClock
from orchestrator.kaggle import Credentials, KaggleClient, RetryPolicy
from orchestrator.ledger import Ledger
from orchestrator.preflight import estimate_output_bytes, run_preflight
from orchestrator.settings import load_settings
from tests.support.cli import clean_env, orchestrate, run_main
from tests.support.project import write_project


def alice_client(emulator) -> KaggleClient:
    credentials = Credentials(username="alice", key=emulator.users["alice"], source="test")
    return KaggleClient(emulator.api_url, credentials, retry=RetryPolicy.fast())


def checks_of(report):
    return {c.name: c for c in report.checks}


def project_settings(tmp_path, **options):
    path = write_project(tmp_path / "project", kaggle='owner = "alice"', **options)
    return load_settings(path)


def user_env_project(tmp_path, **files: str):
    """A project whose env is `myenvs.grid:GridEnv`, its package `myenvs` written from
    `files` (module name -> source) and embedded as a user module; its settings."""
    package = tmp_path / "project" / "myenvs"
    package.mkdir(parents=True)
    for module, source in files.items():
        (package / f"{module}.py").write_text(source)
    return project_settings(
        tmp_path, env="myenvs.grid:GridEnv", kernel_extra='user_modules = ["myenvs"]'
    )


def write_summary(path, *, setup=5.0, finalization=5.0, evaluation=4.0, training=10.0, steps=1000):
    summary = SessionSummary(
        status="complete",
        reason="total_timesteps reached",
        config_hash="x" * 64,
        total_timesteps=steps,
        timesteps_start=0,
        timesteps_end=steps,
        wall=WallClock(
            setup=setup,
            training=training,
            checkpointing=0.5,
            evaluation=evaluation,
            finalization=finalization,
        ),
        seconds_per_step=training / steps,
        checkpoints_written=5,
        started_at="2026-01-01T00:00:00Z",
        ended_at="2026-01-01T00:01:00Z",
        session_limit_s=600,
    )
    path.write_text(summary.model_dump_json())
    return path


def test_offline_checklist_passes_for_a_sound_project(tmp_path):
    settings = project_settings(tmp_path)
    report = run_preflight(settings, settings.run, offline=True)
    checks = checks_of(report)
    assert report.ok, [c.line() for c in report.failures]
    for name in (
        "config",
        "kernel renders",
        "embedded runtime",
        "env",
        "model",
        "intervals",
        "output size",
    ):
        assert checks[name].status == "pass", checks[name].line()
    # The kernel's own build_model, then a few steps learnt (to the first gradient update,
    # unless a loaded machine hits the rehearsal's time bound first).
    assert "DQN builds and learnt" in checks["model"].detail
    assert checks["credentials"].status == "skip"
    assert checks["session budget"].status == "warn"  # no quick test measured yet
    assert settings.run.config_hash()[:16] in checks["config"].detail


def test_custom_env_not_embedded_fails_with_the_fix(tmp_path):
    settings = project_settings(tmp_path, env="myenvs.grid:GridEnv")
    report = run_preflight(settings, settings.run, offline=True)
    check = checks_of(report)["custom env"]
    assert check.status == "fail" and "user_modules" in check.fix
    assert not report.ok and report.bad_input


def test_embedded_user_env_is_built_from_the_unpacked_copy(tmp_path):
    settings = user_env_project(
        tmp_path,
        __init__="",
        grid=(
            "import gymnasium as gym, numpy as np\n"
            "class GridEnv(gym.Env):\n"
            "    observation_space = gym.spaces.Box(0, 1, (5,), np.float32)\n"
            "    action_space = gym.spaces.Discrete(3)\n"
            "    def reset(self, *, seed=None, options=None):\n"
            "        super().reset(seed=seed); return np.zeros(5, np.float32), {}\n"
            "    def step(self, action):\n"
            "        return np.zeros(5, np.float32), 0.0, True, False, {}\n"
        ),
    )
    report = run_preflight(settings, settings.run, offline=True)
    checks = checks_of(report)
    assert checks["env"].status == "pass", checks["env"].line()
    assert "20 bytes" in checks["env"].detail  # 5 float32: the probe really built GridEnv


def test_a_misspelt_hyperparameter_fails_the_model_check_naming_the_key(tmp_path):
    """Issue #9 item 4: the kernel's TypeError, found on this machine before any push."""
    settings = project_settings(tmp_path)
    run_config = settings.run.model_copy(
        update={"hyperparams": {**settings.run.hyperparams, "learning_rte": 0.1}}
    )
    report = run_preflight(settings, run_config, offline=True)
    check = checks_of(report)["model"]
    assert check.status == "fail" and report.bad_input
    assert "unexpected keyword argument 'learning_rte'" in check.detail
    assert "[run.hyperparams] learning_rte" in check.fix and "'learning_rate'" in check.fix


def test_a_misspelt_policy_kwarg_names_its_section(tmp_path):
    settings = project_settings(tmp_path)
    run_config = settings.run.model_copy(update={"policy_kwargs": {"net_arc": [8]}})
    check = checks_of(run_preflight(settings, run_config, offline=True))["model"]
    assert check.status == "fail" and "[run.policy_kwargs] net_arc" in check.fix
    assert "'net_arch'" in check.fix


def test_session_limit_past_kaggle_fails(tmp_path):
    settings = project_settings(tmp_path, run_extra="")
    run = settings.run.model_copy(update={"session_limit_s": 13 * 3600})
    report = run_preflight(settings, run, offline=True)
    assert checks_of(report)["session budget"].status == "fail"


def test_budget_uses_a_quick_test_summary(tmp_path):
    settings = project_settings(tmp_path)
    good = write_summary(tmp_path / "good.json")
    report = run_preflight(settings, settings.run, offline=True, summary_path=good)
    assert checks_of(report)["session budget"].status == "pass"
    slow = write_summary(tmp_path / "slow.json", setup=400.0, finalization=300.0)
    report = run_preflight(settings, settings.run, offline=True, summary_path=slow)
    check = checks_of(report)["session budget"]
    assert check.status == "fail" and "session_limit_s" in check.fix


def test_tiny_intervals_without_a_time_floor_warn(tmp_path):
    settings = project_settings(tmp_path)
    run = settings.run.model_copy(update={"checkpoint_min_seconds": 0.0, "checkpoint_every": 10})
    report = run_preflight(settings, run, offline=True)
    warnings = [c for c in report.checks if c.name == "intervals" and c.status == "warn"]
    assert warnings and "checkpoint_min_seconds" in warnings[0].fix


def test_output_size_grows_with_the_buffer_and_fails_past_kaggle(tmp_path):
    settings = project_settings(tmp_path)
    small = estimate_output_bytes(settings.run, {"obs_bytes": 160, "obs_dim": 40})
    huge_run = settings.run.model_copy(
        update={"total_timesteps": 200_000_000, "hyperparams": {"buffer_size": 100_000_000}}
    )
    assert estimate_output_bytes(huge_run, {"obs_bytes": 160, "obs_dim": 40}) > 20e9 > small
    report = run_preflight(settings, huge_run, offline=True)
    assert checks_of(report)["output size"].status == "fail"


def test_missing_credentials_fail_the_online_check(tmp_path, monkeypatch, capsys):
    write_project(tmp_path / "project", kaggle='owner = "alice"')
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home")}
    code, out, _ = run_main(
        monkeypatch, capsys, "preflight", "--json", cwd=tmp_path / "project", env=env
    )
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 2 and not report["ok"]
    assert (
        checks["credentials"]["status"] == "fail" and "KAGGLE_KEY" in checks["credentials"]["fix"]
    )


def test_spent_gpu_quota_is_an_infrastructure_failure(emulator, tmp_path, monkeypatch, capsys):
    write_project(tmp_path / "project", accelerator="NvidiaTeslaT4")
    emulator.set_gpu_used("alice", 40 * 3600)
    code, out, _ = run_main(
        monkeypatch,
        capsys,
        "preflight",
        "--json",
        cwd=tmp_path / "project",
        env=emulator.env("alice"),
    )
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["credentials"]["status"] == "pass"
    assert checks["GPU quota"]["status"] == "fail" and checks["GPU quota"]["infrastructure"]
    assert code == 3


def test_kaggle_image_list_is_dated_and_lacks_stable_baselines3():
    from orchestrator.kaggle_image import image_packages, image_source, in_image

    packages = image_packages()
    assert "Kaggle/docker-python" in image_source() and "Retrieved" in image_source()
    assert packages["gymnasium"] == "1.2.0" and packages["torch"].startswith("2.10")
    assert "stable-baselines3" not in packages
    for module in ("numpy", "torch", "pandas", "matplotlib", "tensorboard", "pydantic", "yaml"):
        assert in_image(module), module
    assert not in_image("stable_baselines3") and not in_image("sumo_rl")


def test_module_imports_skip_optional_and_relative_ones():
    from orchestrator.kaggle_image import module_imports, third_party

    source = (
        "import os, numpy as np\n"
        "from gymnasium import spaces\n"
        "from . import sibling\n"
        "try:\n    import rich\nexcept ImportError:\n    rich = None\n"
        "def f():\n    import sumo_rl.env\n"
    )
    found = module_imports(source)
    assert found == {"os", "numpy", "gymnasium", "sumo_rl"}
    assert third_party(found, local=["numpy"]) == ["gymnasium", "sumo_rl"]


def test_a_user_module_importing_what_the_image_lacks_fails_with_the_fix(tmp_path):
    settings = user_env_project(
        tmp_path,
        __init__="from myenvs import grid\n",
        grid="import json\nimport numpy as np\nimport sumo_rl\nfrom myenvs import helpers\n",
        helpers="import yaml\n",
    )
    report = run_preflight(settings, settings.run, offline=True)
    check = checks_of(report)["image packages"]
    assert check.status == "fail", check.line()
    # Only the absent one is named: json is stdlib, numpy and yaml are in the image,
    # myenvs travels along, stable_baselines3 is embedded.
    assert "sumo_rl" in check.detail
    for present in ("json", "numpy", "yaml", "myenvs", "stable_baselines3"):
        assert present not in check.detail
    assert "user_modules" in check.fix and "pip_install" in check.fix
    assert not report.ok and report.bad_input

    # Asked for by pip_install (with internet on): no longer a failure.
    settings = project_settings(
        tmp_path / "b",
        env="myenvs.grid:GridEnv",
        kernel_extra='user_modules = ["myenvs"]\npip_install = ["sumo-rl==1.4.5"]',
    )
    settings = settings.model_copy(update={"project_dir": tmp_path / "project"})
    check = checks_of(run_preflight(settings, settings.run, offline=True))["image packages"]
    assert check.status == "pass" and "sumo_rl" in check.detail, check.line()


def test_launch_with_a_misspelt_hyperparameter_pushes_nothing(emulator, tmp_path):
    """The trial of issue #9 item 4, end to end: `--set run.hyperparams.learning_rte=0.1`
    used to pass preflight; now preflight and launch stop at exit 2 naming the key, and
    nothing reaches Kaggle or the ledger."""
    project = tmp_path / "project"
    write_project(project, slug="typo-run", title="Typo Run")
    env = clean_env(emulator.env())
    typo = ("--set", "run.hyperparams.learning_rte=0.1")
    checked = orchestrate("preflight", *typo, "--json", cwd=project, env=env)
    assert checked.returncode == 2, checked.stderr
    model = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}["model"]
    assert model["status"] == "fail" and "learning_rte" in model["detail"]
    launched = orchestrate("launch", *typo, cwd=project, env=env)
    assert launched.returncode == 2, launched.stdout + launched.stderr
    error = launched.stderr.strip().splitlines()[-1]
    assert error.startswith("error: preflight: model:") and "'learning_rate'" in error
    assert Ledger(project).runs() == []
    with alice_client(emulator) as client:
        assert client.find_own_kernel("alice", "typo-run") is None
