"""Push: the SaveKernel wire body, typed refusals, and the no-blind-repeat rule after ambiguous failures."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator.kaggle import (
    AmbiguousPush,
    BadRequest,
    CapacityRefused,
    DockerImageRefused,
    PushSpec,
    QuotaExhausted,
    Throttled,
)
from tests.support.kaggle_fakes import body_of, json_response, rpc_method

SPEC = PushSpec(
    id="alice/seg-1",
    title="Segment one",
    text="print('hi')",
    enable_gpu=True,
    kernel_sources=["alice/seg-0"],
)


class FakeKaggle:
    """Just enough of the kernels service, as harsh as kaggle.com: GetKernel answers 403 for
    an unknown kernel, ListKernels lists the account's kernels (a new one only `list_lag`
    listings after its push), SaveKernel fails as scripted."""

    def __init__(
        self,
        versions: dict[str, int] | None = None,
        save_failures=(),
        list_failures=(),
        list_lag: int = 0,
    ) -> None:
        self.versions = dict(versions or {})
        self.save_failures = list(save_failures)  # each: (exception or response, applied: bool)
        self.list_failures = list(list_failures)
        self.list_lag = list_lag
        self.unlisted: dict[str, int] = {}  # new kernel -> listings before it shows
        self.calls: list[str] = []
        self.saved: list[dict] = []

    def metadata(self, ref: str) -> dict:
        owner, _, slug = ref.partition("/")
        return {
            "ref": ref,
            "slug": slug,
            "author": owner,
            "title": "t",
            "currentVersionNumber": self.versions[ref],
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method = rpc_method(request)
        self.calls.append(method)
        body = body_of(request)
        if method == "GetKernel":
            ref = f"{body['userName']}/{body['kernelSlug']}"
            if ref not in self.versions or ref in self.unlisted:
                denied = {"code": 403, "message": "Permission 'kernels.get' was denied"}
                return json_response(denied, 403)
            return json_response(
                {"metadata": self.metadata(ref), "blob": {"source": "print('hi')"}}
            )
        if method == "ListKernels":
            if self.list_failures:
                failure = self.list_failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
            listed = []
            for ref in self.versions:
                if self.unlisted.get(ref, 0) > 0:
                    self.unlisted[ref] -= 1
                    continue
                self.unlisted.pop(ref, None)
                if ref.startswith(body.get("user", "") + "/"):
                    listed.append(self.metadata(ref))
            return json_response({"kernels": listed})
        if method == "SaveKernel":
            self.saved.append(body)
            failure, applied = self.save_failures.pop(0) if self.save_failures else (None, True)
            if applied:
                if body["slug"] not in self.versions and self.list_lag:
                    self.unlisted[body["slug"]] = self.list_lag
                self.versions[body["slug"]] = self.versions.get(body["slug"], 0) + 1
            if isinstance(failure, Exception):
                raise failure
            if failure is not None:
                return failure
            ref = body["slug"]
            return json_response(
                {
                    "ref": ref,
                    "url": f"https://www.kaggle.com/code/{ref}",
                    "versionNumber": self.versions[ref],
                }
            )
        raise AssertionError(method)


def test_push_sends_the_cli_shaped_body_and_returns_the_version(make_client):
    fake = FakeKaggle()
    result = make_client(fake).push(SPEC)
    assert (result.ref, result.version_number, result.confirmed_by_check) == (
        "alice/seg-1",
        1,
        False,
    )
    body = fake.saved[0]
    assert body["slug"] == "alice/seg-1" and body["newTitle"] == "Segment one"
    assert body["text"] == "print('hi')"
    assert body["language"] == "python" and body["kernelType"] == "script"
    assert (
        body["isPrivate"] is True and body["enableGpu"] is True and body["enableInternet"] is True
    )
    assert body["kernelDataSources"] == ["alice/seg-0"]
    assert fake.calls.count("SaveKernel") == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("Maximum batch GPU session count of 2 reached.", CapacityRefused),
        ("Maximum batch CPU session count of 5 reached.", CapacityRefused),
        ("Maximum interactive GPU session count of 1 reached.", CapacityRefused),
        ("Maximum batch TPU session count of 1 reached.", CapacityRefused),
        ("You have exceeded your weekly GPU quota. It resets Saturday.", QuotaExhausted),
        ("Maximum weekly GPU quota of 30.00 hours reached.", QuotaExhausted),
        ("The requested docker image is not available: gcr.io/x@sha256:1", DockerImageRefused),
        ("Notebook title is invalid", BadRequest),
    ],
)
def test_error_string_in_a_200_push_becomes_a_typed_error(make_client, error, expected):
    fake = FakeKaggle(save_failures=[(json_response({"error": error}), False)])
    with pytest.raises(expected) as caught:
        make_client(fake).push(SPEC)
    assert fake.calls.count("SaveKernel") == 1
    if expected is CapacityRefused:
        kind, count = error.split(" session count of ")
        assert caught.value.limit == int(count.split()[0])
        assert caught.value.accelerator == kind.split()[-1]


def test_invalid_sources_are_reported_not_raised(make_client):
    fake = FakeKaggle(
        save_failures=[
            (
                json_response(
                    {
                        "ref": "alice/seg-1",
                        "url": "u",
                        "versionNumber": 1,
                        "invalidKernelSources": ["alice/gone"],
                    }
                ),
                True,
            )
        ]
    )
    result = make_client(fake).push(SPEC)
    assert result.invalid_sources == {"kernel": ["alice/gone"]}


@pytest.mark.parametrize(
    "failure",
    [
        json_response({"message": "oops"}, 500),
        httpx.ReadTimeout("timed out"),
        httpx.ReadError("reset"),
    ],
    ids=["500", "timeout", "reset"],
)
def test_ambiguous_push_that_was_accepted_is_not_repeated(make_client, failure):
    fake = FakeKaggle(versions={"alice/seg-1": 3}, save_failures=[(failure, True)])
    result = make_client(fake).push(SPEC)
    assert result.version_number == 4 and result.confirmed_by_check
    assert fake.calls.count("SaveKernel") == 1


def test_ambiguous_push_of_a_fresh_slug_is_confirmed_by_its_listing(make_client):
    """Listed only on the third look (the read-after-write lag): still confirmed, not re-sent."""
    fake = FakeKaggle(save_failures=[(httpx.ReadTimeout("timed out"), True)], list_lag=2)
    result = make_client(fake).push(SPEC)
    assert result.confirmed_by_check and result.ref == "alice/seg-1"
    assert fake.calls == ["ListKernels", "SaveKernel", "ListKernels", "ListKernels", "ListKernels"]
    assert "GetKernel" not in fake.calls  # its 403 cannot tell absent from just pushed


def test_ambiguous_push_of_a_fresh_slug_never_listed_is_not_sent_again(make_client):
    """Not listed within the check: maybe still in the lag, so the client never re-sends."""
    fake = FakeKaggle(save_failures=[(json_response({}, 503), False)])
    with pytest.raises(AmbiguousPush, match="not listed yet"):
        make_client(fake).push(SPEC)
    assert fake.calls.count("SaveKernel") == 1


def test_ambiguous_push_that_was_not_accepted_is_sent_again(make_client):
    fake = FakeKaggle(versions={"alice/seg-1": 3}, save_failures=[(json_response({}, 503), False)])
    result = make_client(fake).push(SPEC)
    assert result.version_number == 4 and not result.confirmed_by_check
    assert fake.calls == ["ListKernels", "SaveKernel", "ListKernels", "SaveKernel"]


def test_ambiguous_push_whose_check_fails_raises_ambiguous_push(make_client):
    fake = FakeKaggle(
        save_failures=[(httpx.ReadTimeout("timed out"), True)],
        list_failures=[json_response({"kernels": []})] + [json_response({}, 503)] * 10,
    )
    with pytest.raises(AmbiguousPush) as caught:
        make_client(fake).push(SPEC)
    assert caught.value.ref == "alice/seg-1"
    assert fake.calls.count("SaveKernel") == 1


def test_ambiguous_push_without_version_numbers_raises(make_client):
    fake = FakeKaggle(versions={"alice/seg-1": 3}, save_failures=[(httpx.ReadTimeout("t"), True)])
    original = fake.__call__

    def without_versions(request):
        response = original(request)
        if rpc_method(request) == "ListKernels" and response.status_code == 200:
            body = json.loads(response.content)
            for kernel in body["kernels"]:
                kernel.pop("currentVersionNumber")
            return json_response(body)
        return response

    with pytest.raises(AmbiguousPush):
        make_client(without_versions).push(SPEC)
    assert fake.calls.count("SaveKernel") == 1


def test_throttled_push_is_resent_without_a_check_since_it_was_refused(make_client, sleeps):
    fake = FakeKaggle(save_failures=[(json_response({}, 429, **{"Retry-After": "2"}), False)])
    result = make_client(fake).push(SPEC)
    assert result.version_number == 1
    assert fake.calls == ["ListKernels", "SaveKernel", "SaveKernel"]
    assert sleeps.waits == [2.0]


def test_push_throttled_until_the_end_raises_throttled(make_client):
    fake = FakeKaggle(save_failures=[(json_response({}, 429, **{"Retry-After": "1"}), False)] * 5)
    with pytest.raises(Throttled) as caught:
        make_client(fake, max_attempts=3).push(SPEC)
    assert caught.value.retry_after == 1
    assert fake.calls.count("SaveKernel") == 3


def test_push_spec_from_kernel_folder_reads_metadata_like_the_cli(tmp_path):
    (tmp_path / "run.py").write_text("print(1)\n")
    (tmp_path / "kernel-metadata.json").write_text(
        json.dumps(
            {
                "id": "alice/traffic-seg-2",
                "title": "Traffic seg 2",
                "code_file": "run.py",
                "language": "python",
                "kernel_type": "script",
                "enable_gpu": "true",
                "kernel_sources": ["alice/traffic-seg-1"],
                "keywords": ["rl"],
                "machine_shape": "NvidiaTeslaT4",
            }
        )
    )
    spec = PushSpec.from_kernel_folder(tmp_path, timeout=3600)
    body = spec.to_request().to_dict()
    assert body["slug"] == "alice/traffic-seg-2" and body["text"] == "print(1)\n"
    assert body["enableGpu"] is True and body["isPrivate"] is True and body["enableTpu"] is False
    assert body["kernelDataSources"] == ["alice/traffic-seg-1"] and body["categoryIds"] == ["rl"]
    assert body["machineShape"] == "NvidiaTeslaT4" and body["sessionTimeoutSeconds"] == 3600
    assert (spec.owner, spec.slug) == ("alice", "traffic-seg-2")


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        (
            {
                "id": "alice/x-slug",
                "title": "abc",
                "code_file": "run.py",
                "language": "python",
                "kernel_type": "script",
            },
            "five",
        ),
        (
            {
                "id": "alice/x-slug",
                "code_file": "missing.py",
                "language": "python",
                "kernel_type": "script",
            },
            "not found",
        ),
        (
            {
                "id": "alice/x-slug",
                "code_file": "run.py",
                "language": "cobol",
                "kernel_type": "script",
            },
            "language",
        ),
        (
            {
                "title": "Title ok",
                "code_file": "run.py",
                "language": "python",
                "kernel_type": "script",
            },
            "id",
        ),
    ],
)
def test_push_spec_refuses_bad_metadata(tmp_path, metadata, problem):
    (tmp_path / "run.py").write_text("print(1)\n")
    (tmp_path / "kernel-metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=problem):
        PushSpec.from_kernel_folder(tmp_path)
