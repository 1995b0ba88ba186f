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


def test_help_startup_against_bare_python():
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
    print(
        f"\nBENCH orchestrate --help: {helped:.3f}s (baseline: python -c pass {bare:.3f}s, ratio: {helped / bare:.1f}x)"
    )
    print(
        f"BENCH orchestrate --help vs import typer+rich: {helped:.3f}s (baseline: {typer_only:.3f}s, ratio: {helped / typer_only:.1f}x)"
    )


def test_render_kernel_time(tmp_path):
    settings = settings_from_dict({"kaggle": {"owner": "alice"}, "kernel": {"slug": "bench-run"}})
    baseline = best_of(3, lambda: settings.run.config_hash())
    rendered = best_of(
        5, lambda: render_kernel(settings, settings.run, slug="bench-run", out_dir=tmp_path / "k")
    )
    print(
        f"\nBENCH render_kernel: {rendered:.4f}s (baseline: config_hash {baseline:.6f}s, ratio: {rendered / baseline:.0f}x)"
    )
