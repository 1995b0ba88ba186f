"""render_kernel: metadata as the official CLI wants it, one deterministic self-contained script."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile

import pytest

from orchestrator.build import (
    IMPORT_LOG_PREFIX,
    SELFCHECK_FLAG,
    render_kernel,
    title_for_slug,
)
from orchestrator.errors import UserError
from orchestrator.settings import settings_from_dict


def make_settings(tmp_path, **kernel):
    settings = settings_from_dict(
        {
            "kaggle": {"owner": "alice"},
            "kernel": {"slug": "tiny-run", "title": "Tiny Run", **kernel},
            "run": {"total_timesteps": 2000, "policy_kwargs": {"net_arch": [32, 32]}},
        }
    )
    return settings.model_copy(update={"project_dir": tmp_path})


def run_selfcheck(script, cwd):
    done = subprocess.run(
        [sys.executable, str(script), SELFCHECK_FLAG],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "ORCHESTRATE_WORKING_DIR": str(cwd)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def embedded_names(script_text):
    namespace: dict = {}
    start = script_text.index("BUNDLE = (")
    end = script_text.index("\n)\n", start) + 3
    exec(script_text[start:end], namespace)  # only the literal: a tuple of string pieces
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(namespace["BUNDLE"]))) as archive:
        return archive.namelist()


def test_metadata_matches_what_kaggle_kernels_push_reads(tmp_path):
    settings = make_settings(
        tmp_path, accelerator="NvidiaTeslaT4", dataset_sources=["bob/traffic-data"]
    )
    folder = render_kernel(
        settings,
        settings.run,
        slug="tiny-run",
        kernel_sources=["alice/tiny-run-s001"],
        out_dir=tmp_path / "k",
    )
    meta = json.loads((tmp_path / "k" / "kernel-metadata.json").read_text())
    assert meta == folder.metadata
    assert meta["id"] == "alice/tiny-run"
    assert meta["code_file"] == "tiny-run.py" and (tmp_path / "k" / "tiny-run.py").is_file()
    assert (meta["language"], meta["kernel_type"]) == ("python", "script")
    assert (meta["enable_gpu"], meta["enable_tpu"], meta["machine_shape"]) == (
        True,
        False,
        "NvidiaTeslaT4",
    )
    assert meta["kernel_sources"] == ["alice/tiny-run-s001"]
    assert meta["dataset_sources"] == ["bob/traffic-data"]
    assert meta["docker_image_pinning_type"] == "original"
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "kernel-metadata.json",
        "tiny-run.py",
    ]


def test_docker_image_reaches_metadata_and_the_savekernel_request(tmp_path):
    from orchestrator.kaggle import PushSpec
    from orchestrator.launch import with_docker_image

    image = "gcr.io/kaggle-images/python@sha256:" + "c" * 64
    unpinned = make_settings(tmp_path)
    meta = render_kernel(unpinned, unpinned.run, slug="tiny-run", out_dir=tmp_path / "a").metadata
    assert "docker_image" not in meta  # Kaggle's choice
    for settings in (
        make_settings(tmp_path, docker_image=image),
        with_docker_image(unpinned, image),
    ):
        folder = render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "b")
        assert folder.metadata["docker_image"] == image  # the key `kaggle kernels push` reads
        assert PushSpec.from_kernel_folder(folder.path).to_request().docker_image == image
    with pytest.raises(UserError, match="docker_image"):
        make_settings(tmp_path, docker_image="not an image")
    with pytest.raises(UserError, match="not an image name"):
        with_docker_image(unpinned, "not an image")


def test_cpu_and_tpu_shapes_set_the_flags(tmp_path):
    cpu = make_settings(tmp_path, accelerator="none")
    meta = render_kernel(cpu, cpu.run, slug="tiny-run", out_dir=tmp_path / "cpu").metadata
    assert (meta["enable_gpu"], meta["enable_tpu"], "machine_shape" in meta) == (
        False,
        False,
        False,
    )
    tpu = make_settings(tmp_path, accelerator="TpuV5E8")
    meta = render_kernel(tpu, tpu.run, slug="tiny-run", out_dir=tmp_path / "tpu").metadata
    assert (meta["enable_gpu"], meta["enable_tpu"]) == (False, True)


def test_render_is_deterministic(tmp_path):
    settings = make_settings(tmp_path)
    first = render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "one")
    second = render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "two")
    for name in ("kernel-metadata.json", "tiny-run.py"):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes()
    changed = settings.run.model_copy(update={"seed": 1})
    third = render_kernel(settings, changed, slug="tiny-run", out_dir=tmp_path / "three")
    assert third.script_path.read_bytes() != first.script_path.read_bytes()


def test_title_follows_the_slug():
    assert title_for_slug(None, "ppo-traffic") == "Ppo Traffic"
    assert title_for_slug("PPO traffic", "ppo-traffic") == "PPO traffic"
    assert title_for_slug("PPO traffic", "ppo-traffic-s002") == "PPO traffic s002"
    with pytest.raises(UserError, match="slugifies to 'other-name'"):
        title_for_slug("Other name", "ppo-traffic")
    assert title_for_slug("Other name", "long-chain-s2", strict=False) == "Long Chain S2"


def test_a_chain_segment_slug_gets_a_title_of_its_own(tmp_path):
    settings = make_settings(tmp_path)  # slug tiny-run, title "Tiny Run"
    folder = render_kernel(settings, settings.run, slug="long-chain-s3", out_dir=tmp_path / "k")
    assert folder.metadata["title"] == "Long Chain S3"


@pytest.mark.parametrize(
    ("slug", "kernel", "needle"),
    [
        ("abc", {}, "shorter than 5"),
        ("Has_Caps", {}, "lowercase"),
        ("tiny-run", {"title": "Something Else"}, "slugifies"),
        ("tiny-run", {"kernel_sources": ["no-owner"]}, "owner/kernel-slug"),
        ("tiny-run", {"model_sources": ["a/b/c/d/latest"]}, "must be a number"),
        ("tiny-run", {"user_modules": ["not_here"]}, "not found"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, slug, kernel, needle):
    settings = make_settings(tmp_path, **kernel)
    with pytest.raises(UserError, match=needle):
        render_kernel(settings, settings.run, slug=slug, out_dir=tmp_path / "out" / "k")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_refuses_to_replace_a_folder_that_is_not_a_kernel(tmp_path):
    settings = make_settings(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a kernel folder"):
        render_kernel(settings, settings.run, slug="tiny-run", out_dir=precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_rerender_replaces_the_folder(tmp_path):
    settings = make_settings(tmp_path)
    render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "k")
    render_kernel(settings, settings.run, slug="tiny-run-b", out_dir=tmp_path / "k")
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "kernel-metadata.json",
        "tiny-run-b.py",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".k.")]


def test_bundle_holds_the_runtime_sources_and_stable_baselines3(tmp_path):
    import stable_baselines3

    settings = make_settings(tmp_path)
    folder = render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "k")
    text = folder.script_path.read_text()
    names = embedded_names(text)
    assert "kernel_template/__main__.py" in names and "kernel_template/config.py" in names
    runtime = [n for n in names if n.startswith("kernel_template/")]
    assert all(n.endswith(".py") for n in runtime)
    # Kaggle's image has no stable-baselines3: its sources and package data travel along.
    assert {"stable_baselines3/__init__.py", "stable_baselines3/version.txt"} <= set(names)
    assert "stable_baselines3/dqn/dqn.py" in names
    assert set(names) == set(folder.embedded_files)
    assert all(n.startswith(("kernel_template/", "stable_baselines3/")) for n in names)
    assert not any("__pycache__" in n or "/tests/" in n or n.endswith(".pyc") for n in names)
    version = stable_baselines3.__version__
    assert folder.embedded_packages == {"stable_baselines3": version}
    assert (
        f"# Embedded packages (imported before the image's own): stable_baselines3=={version}"
        in text
    )
    assert "PIP_INSTALL = []" in text and folder.pip_install == ()


def test_pip_install_is_carried_into_the_script_and_torch_refused(tmp_path):
    settings = make_settings(tmp_path, pip_install=["sumo-rl==1.4.5"])
    folder = render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "k")
    assert "PIP_INSTALL = ['sumo-rl==1.4.5']" in folder.script_path.read_text()
    assert folder.pip_install == ("sumo-rl==1.4.5",)
    with pytest.raises(UserError, match="never reinstall torch"):
        make_settings(tmp_path, pip_install=["torch>=2"])


def test_the_embedded_runtime_is_the_one_imported(tmp_path):
    settings = make_settings(tmp_path)
    folder = render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "k")
    lines = run_selfcheck(folder.script_path, tmp_path)
    imported = [line for line in lines if line.startswith(IMPORT_LOG_PREFIX)]
    assert len(imported) == 1
    path = imported[0].removeprefix(IMPORT_LOG_PREFIX)
    report = json.loads(lines[-1])
    assert path == report["kernel_template"]
    assert path.startswith(report["runtime_dir"] + "/") and report["runtime_dir"].startswith(
        "/tmp/"
    )
    assert report["config_hash"] == settings.run.config_hash()
    # The embedded stable-baselines3 is the one found first, not this machine's.
    assert report["embedded"]["stable_baselines3"].startswith(report["runtime_dir"] + "/")


def test_user_modules_travel_with_the_kernel(tmp_path):
    package = tmp_path / "myenvs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "grid.py").write_text("MARKER = 'embedded grid env'\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "junk.pyc").write_bytes(b"x")
    (tmp_path / "helpers.py").write_text("VALUE = 7\n")
    settings = make_settings(tmp_path, user_modules=["myenvs", "helpers.py"])
    run = settings.run.model_copy(update={"env": "myenvs.grid:GridEnv"})
    folder = render_kernel(settings, run, slug="tiny-run", out_dir=tmp_path / "k")
    names = embedded_names(folder.script_path.read_text())
    assert {"myenvs/__init__.py", "myenvs/grid.py", "helpers.py"} <= set(names)
    assert not any("__pycache__" in n for n in names)
    elsewhere = tmp_path / "elsewhere"  # the project dir is not on the path there
    elsewhere.mkdir()
    report = json.loads(run_selfcheck(folder.script_path, elsewhere)[-1])
    assert report["user_modules"] == ["helpers", "myenvs"]


def test_user_module_may_not_shadow_the_runtime(tmp_path):
    (tmp_path / "kernel_template.py").write_text("")
    settings = make_settings(tmp_path, user_modules=["kernel_template.py"])
    with pytest.raises(UserError, match="shadows"):
        render_kernel(settings, settings.run, slug="tiny-run", out_dir=tmp_path / "k")
