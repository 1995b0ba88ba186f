"""A key or token never appears in logs, exception text or reprs, even when a server echoes it."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from orchestrator.kaggle import Credentials, KaggleError, PushSpec
from tests.support.kaggle_fakes import SECRET_KEY, json_response

TOKEN = "tok-very-secret-abcdef123456"
ENCODED = base64.b64encode(f"alice:{SECRET_KEY}".encode()).decode()


def echoing_server(request: httpx.Request) -> httpx.Response:
    """A misbehaving server that puts the Authorization header into its error messages."""
    auth = request.headers.get("authorization", "")
    return json_response(
        {"code": 400, "message": f"bad request, you sent {auth} and {SECRET_KEY} {TOKEN}"}, 400
    )


def test_secrets_cover_key_token_and_basic_header():
    assert set(Credentials(username="alice", key=SECRET_KEY).secrets()) == {SECRET_KEY, ENCODED}
    assert Credentials(username="alice", token=TOKEN).secrets() == [TOKEN]


def test_credentials_repr_hides_key_and_token():
    for creds in (
        Credentials(username="alice", key=SECRET_KEY),
        Credentials(username="alice", token=TOKEN),
    ):
        for text in (repr(creds), str(creds)):
            assert SECRET_KEY not in text and TOKEN not in text and "alice" in text


@pytest.mark.parametrize(
    "creds",
    [Credentials(username="alice", key=SECRET_KEY), Credentials(username="alice", token=TOKEN)],
    ids=["basic", "bearer"],
)
def test_key_never_in_logs_or_errors(make_client, caplog, creds, tmp_path):
    client = make_client(echoing_server, credentials=creds)
    texts = [repr(client), repr(client.credentials)]
    with caplog.at_level(logging.DEBUG):
        for call in (
            lambda: client.status("alice", "x"),
            lambda: client.list_output("alice", "x"),
            lambda: client.push(PushSpec(id="alice/some-run", text="print(1)")),
            lambda: list(client.stream_log("alice", "x")),
            lambda: client.quota(),
        ):
            with pytest.raises(KaggleError) as caught:
                call()
            texts += [str(caught.value), repr(caught.value), "".join(map(str, caught.value.args))]
    texts += [record.getMessage() for record in caplog.records]
    joined = "\n".join(texts)
    assert "bad request" in joined  # the messages themselves do come through
    for secret in client.credentials.secrets():
        assert secret not in joined


def test_retry_logging_carries_no_secret(make_client, caplog):
    answers = iter([json_response({}, 503), json_response({"status": "RUNNING"})])
    client = make_client(lambda request: next(answers))
    with caplog.at_level(logging.DEBUG):
        client.status("alice", "x")
    assert caplog.records  # the retry was logged
    assert all(
        SECRET_KEY not in r.getMessage() and ENCODED not in r.getMessage() for r in caplog.records
    )
