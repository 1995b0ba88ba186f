"""Benchmarks (make bench): `orchestrate --help` start-up and kernel rendering."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from orchestrator.build import render_kernel
from orchestrator.settings import settings_from_dict

pytestmark = pytest.mark.bench


def best_of(n, fn):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_help_startup_against_bare_python(bench_record):
    """Target (DESIGN: `orchestrate --help` answers in a blink): <= 0.5 s, best of 5."""
    bare = best_of(5, lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
    typer_only = best_of(
        5, lambda: subprocess.run([sys.executable, "-c", "import typer, rich.console"], check=True)
    )
    helped = best_of(
        5,
        lambda: subprocess.run(
            [sys.executable, "-m", "orchestrator", "--help"], check=True, capture_output=True
        ),
    )
    assert bench_record(
        "orchestrate_help_s",
        helped,
        unit=" s",
        baseline=typer_only,
        ratio=helped / typer_only,
        target="<= 0.5 s",
        met=helped <= 0.5,
        bare_python_s=bare,
        baseline_is="python -c 'import typer, rich.console'",
    )


def test_render_kernel_time(tmp_path, bench_record):
    """Target: rendering a kernel (embedding the runtime) <= 0.25 s, best of 5."""
    settings = settings_from_dict({"kaggle": {"owner": "alice"}, "kernel": {"slug": "bench-run"}})
    baseline = best_of(3, lambda: settings.run.config_hash())
    rendered = best_of(
        5, lambda: render_kernel(settings, settings.run, slug="bench-run", out_dir=tmp_path / "k")
    )
    assert bench_record(
        "render_kernel_s",
        rendered,
        unit=" s",
        baseline=baseline,
        ratio=rendered / baseline,
        target="<= 0.25 s",
        met=rendered <= 0.25,
    )
