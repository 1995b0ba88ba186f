"""The rendered script runs where the image lacks stable-baselines3 (it carries its own), and
on Kaggle's gymnasium 1.2.0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_template import layout
from orchestrator.build import render_kernel
from orchestrator.settings import settings_from_dict
from tests.support.kernel import DQN_CONFIG, config_with, summary_of

# Installed as sitecustomize on PYTHONPATH: stable_baselines3 cannot be imported from the
# host's site-packages (as in Kaggle's image), only from a copy found elsewhere first.
HIDE_SITECUSTOMIZE = """
import importlib.machinery
import os
import sys

_HIDDEN = os.environ["ORCHESTRATE_TEST_HIDE_FROM"]


class _HideHostPackage:
    def find_spec(self, name, path=None, target=None):
        if name != "stable_baselines3":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and (spec.origin or "").startswith(_HIDDEN):
            raise ModuleNotFoundError("No module named 'stable_baselines3' (hidden)", name=name)
        return None


sys.meta_path.insert(0, _HideHostPackage())
"""

CONFIG = config_with(
    DQN_CONFIG, total_timesteps=400, checkpoint_every=200, export_every=400, session_limit_s=300
)


def host_sb3_dir() -> str:
    import stable_baselines3

    return str(Path(stable_baselines3.__file__).resolve().parent.parent) + os.sep


def render(tmp_path: Path) -> Path:
    settings = settings_from_dict(
        {
            "kaggle": {"owner": "alice"},
            "kernel": {"slug": "embed-test", "accelerator": "none"},
            "run": CONFIG,
        }
    )
    folder = render_kernel(settings, settings.run, slug="embed-test", out_dir=tmp_path / "kernel")
    return folder.script_path


def hiding_env(tmp_path: Path, first_on_path: list[Path] = ()) -> dict[str, str]:
    hide = tmp_path / "hide"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text(HIDE_SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATE_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, first_on_path), str(hide)])
    env["ORCHESTRATE_TEST_HIDE_FROM"] = host_sb3_dir()
    env[layout.WORKING_DIR_ENV] = str(tmp_path / "working")
    env[layout.INPUT_DIR_ENV] = str(tmp_path / "input")
    return env


def run_script(script: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_host_package_is_really_hidden(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import stable_baselines3"],
        env=hiding_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "hidden" in done.stderr


@pytest.mark.slow
def test_the_script_trains_with_its_embedded_stable_baselines3(tmp_path):
    import stable_baselines3

    script = render(tmp_path)
    (tmp_path / "working").mkdir()
    done = run_script(script, hiding_env(tmp_path), tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary = summary_of(tmp_path / "working")
    assert summary.status == "complete" and summary.timesteps_end == 400
    assert summary.embedded == {"stable_baselines3": stable_baselines3.__version__}
    assert summary.versions["stable_baselines3"] == stable_baselines3.__version__


def test_a_missing_module_fails_in_one_line_naming_the_fix(tmp_path):
    # Without the embedded copy (a kernel_template run straight from the checkout), the
    # bootstrap names the module and the fix instead of installing anything.
    config_path = tmp_path / "run.json"
    config_path.write_text(json.dumps(CONFIG))
    repo = Path(__file__).resolve().parents[2]
    env = hiding_env(tmp_path, [repo])
    done = subprocess.run(
        [sys.executable, "-m", "kernel_template", "--config", str(config_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "stable_baselines3" in last and "user_modules" in last and "pip_install" in last


@pytest.fixture(scope="module")
def gymnasium_1_2(tmp_path_factory):
    """gymnasium 1.2.0 (Kaggle's) installed alone into a folder, from PyPI."""
    target = tmp_path_factory.mktemp("gymnasium-1.2.0")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "gymnasium==1.2.0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.skip(f"gymnasium 1.2.0 not installable here: {done.stderr.strip()[-300:]}")
    return target


@pytest.mark.slow
def test_the_script_runs_on_kaggles_gymnasium_1_2(tmp_path, gymnasium_1_2):
    script = render(tmp_path)
    (tmp_path / "working").mkdir()
    done = run_script(script, hiding_env(tmp_path, [gymnasium_1_2]), tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary = summary_of(tmp_path / "working")
    assert summary.status == "complete" and summary.timesteps_end == 400
    assert summary.versions["gymnasium"] == "1.2.0"
    assert "stable_baselines3" in summary.embedded


COMPILE_ALL = """
import base64, io, sys, zipfile
text = open(sys.argv[1]).read()
compile(text, sys.argv[1], "exec")
namespace = {}
start = text.index("BUNDLE = (")
exec(text[start : text.index("\\n)\\n", start) + 3], namespace)
with zipfile.ZipFile(io.BytesIO(base64.b64decode(namespace["BUNDLE"]))) as archive:
    names = [n for n in archive.namelist() if n.endswith(".py")]
    for name in names:
        compile(archive.read(name), name, "exec")
print(len(names))
"""


def find_python(version: str) -> str | None:
    """An interpreter of that version: on PATH or under pyenv, checked by running it."""
    import glob
    import shutil

    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_the_script_and_everything_it_carries_compile_on_kaggles_pythons(tmp_path, version):
    python = find_python(version)
    if python is None:
        pytest.skip(f"no python{version} here")
    script = render(tmp_path)
    done = subprocess.run(
        [python, "-c", COMPILE_ALL, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 50  # kernel_template and stable_baselines3
