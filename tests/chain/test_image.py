"""A chain whose later segment runs on another Kaggle image than its first: an alert."""

from __future__ import annotations

import io
import json

import pytest

from orchestrator.artifacts import pull_artifacts
from orchestrator.chain.scheduler import run_chains
from orchestrator.chain.start import start_chain
from orchestrator.chain.status import chain_status, print_status
from orchestrator.chain.step import ChainStepper

CHAIN = "tiny-chain"
# What Kaggle might run segment 2 on after retiring the pinned image.
OTHER_IMAGE = "gcr.io/kaggle-images/python@sha256:" + "e" * 64


@pytest.mark.slow
def test_a_segment_on_another_image_than_the_first_raises_an_alert(emulator, chain_project) -> None:
    # (test_chain_e2e checks the pinning itself on a chain that keeps its image.)
    project = chain_project(emulator, total=1000)

    def pull_then_retire_the_image(client, owner, slug, dest):
        result = pull_artifacts(client, owner, slug, dest)
        if slug == f"{CHAIN}-s1":  # before segment 2 is pushed
            emulator.force_docker_image(OTHER_IMAGE)
        return result

    start_chain(project.settings, project.ledger, CHAIN, owner="alice", segments=[500, 500])
    err = io.StringIO()
    with project.client() as client:
        stepper = ChainStepper(
            project.settings, client, project.ledger, err=err, pull=pull_then_retire_the_image
        )
        result = run_chains(stepper, [CHAIN], poll_interval=0.3, follow=False)[CHAIN]
    assert result.outcome == "done", result.message

    s1, s2 = project.ledger.runs(CHAIN)
    first_image = s1.summary.versions["docker_image"]
    # Segment 2 asked for segment 1's image but, as the summary says, ran on the other one.
    assert emulator.kernel_versions("alice", s2.slug)[0]["pushed_docker_image"] == first_image
    assert s2.docker_image == first_image
    assert s2.summary.versions["docker_image"] == OTHER_IMAGE

    chain = project.ledger.get_chain(CHAIN)
    assert chain.docker_image == first_image
    assert chain.reference_versions["numpy"] == s1.summary.versions["numpy"]
    alerts = [n.message for n in chain.notes if n.level == "alert"]
    assert len(alerts) == 1 and alerts[0].startswith(f"alice/{s2.slug} ran on other versions")
    assert f"docker_image: {first_image} -> {OTHER_IMAGE}" in alerts[0]
    assert f"ALERT chain {CHAIN}: alice/{s2.slug} ran on other versions" in err.getvalue()

    status = chain_status(project.ledger, CHAIN)
    assert status["docker_image"] == first_image
    assert [row["docker_image"] for row in status["segments"]] == [first_image, OTHER_IMAGE]
    text = io.StringIO()
    print_status(json.loads(json.dumps(status)), file=text)
    assert f"image: {first_image}" in text.getvalue()
