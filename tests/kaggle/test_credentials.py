"""Credential discovery in the official CLI's order, the permission warning, and token introspection."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from orchestrator.kaggle import (
    Credentials,
    CredentialsNotFound,
    KaggleClient,
    RetryPolicy,
    discover_credentials,
)
from tests.support.kaggle_fakes import API, body_of, json_response, rpc_method


def write_kaggle_json(folder, username="alice", key="json-key", mode=0o600):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(json.dumps({"username": username, "key": key}))
    path.chmod(mode)
    return path


def test_nothing_anywhere_names_every_place_looked_at(clean_env):
    with pytest.raises(CredentialsNotFound) as caught:
        discover_credentials()
    message = str(caught.value)
    for place in ("KAGGLE_API_TOKEN", "access_token", "kaggle.json", "KAGGLE_USERNAME/KAGGLE_KEY"):
        assert place in message
    assert "\n" not in message


def test_token_in_env_beats_kaggle_json(clean_env, monkeypatch):
    write_kaggle_json(clean_env / ".kaggle")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-123")
    found = discover_credentials()
    assert (found.kind, found.token, found.source) == ("bearer", "tok-123", "KAGGLE_API_TOKEN")


def test_token_env_may_name_a_file(clean_env, monkeypatch, tmp_path):
    token_file = tmp_path / "tok"
    token_file.write_text("tok-from-file\n")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(token_file))
    assert discover_credentials().token == "tok-from-file"


def test_access_token_file_in_home(clean_env):
    (clean_env / ".kaggle").mkdir()
    (clean_env / ".kaggle" / "access_token").write_text("tok-home\n")
    write_kaggle_json(clean_env / ".kaggle")
    found = discover_credentials()
    assert found.kind == "bearer" and found.token == "tok-home"


def test_kaggle_json_in_config_dir_env(clean_env, monkeypatch, tmp_path):
    write_kaggle_json(clean_env / ".kaggle", username="home-user")
    write_kaggle_json(tmp_path / "cfg", username="cfg-user", key="cfg-key")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    found = discover_credentials()
    assert (found.kind, found.username, found.key) == ("basic", "cfg-user", "cfg-key")


def test_kaggle_json_in_home_dot_kaggle(clean_env):
    write_kaggle_json(clean_env / ".kaggle", username="home-user")
    write_kaggle_json(clean_env / ".config" / "kaggle", username="xdg-user")
    assert discover_credentials().username == "home-user"


def test_dot_config_kaggle_when_dot_kaggle_is_absent(clean_env, monkeypatch, tmp_path):
    write_kaggle_json(clean_env / ".config" / "kaggle", username="xdg-user")
    assert discover_credentials().username == "xdg-user"
    write_kaggle_json(tmp_path / "xdg" / "kaggle", username="xdg-home-user")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert discover_credentials().username == "xdg-home-user"


def test_env_username_and_key_overlay_kaggle_json(clean_env, monkeypatch):
    write_kaggle_json(clean_env / ".kaggle", username="json-user", key="json-key")
    monkeypatch.setenv("KAGGLE_KEY", "env-key")
    found = discover_credentials()
    assert (found.username, found.key) == ("json-user", "env-key")
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    assert discover_credentials().username == "env-user"


def test_env_alone_is_enough(clean_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", "env-key")
    found = discover_credentials()
    assert (found.kind, found.username, found.source) == (
        "basic",
        "env-user",
        "KAGGLE_USERNAME/KAGGLE_KEY",
    )


def test_username_without_key_is_not_enough(clean_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    with pytest.raises(CredentialsNotFound, match="no key"):
        discover_credentials()


@pytest.mark.parametrize(("mode", "warns"), [(0o600, False), (0o640, True), (0o604, True)])
def test_kaggle_json_readable_by_others_warns(clean_env, caplog, mode, warns):
    path = write_kaggle_json(clean_env / ".kaggle", mode=mode)
    with caplog.at_level(logging.WARNING, logger="orchestrator.kaggle"):
        discover_credentials()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warns
    if warns:
        assert f"chmod 600 {path}" in warnings[0] and "json-key" not in warnings[0]


def introspecting_server(active_tokens: dict[str, str], seen: list):
    def handler(request: httpx.Request):
        seen.append((rpc_method(request), request.headers.get("authorization", "")))
        if rpc_method(request) == "IntrospectToken":
            token = body_of(request)["token"]
            if token in active_tokens:
                return json_response({"active": True, "username": active_tokens[token]})
            return json_response({"active": False})
        return json_response({"status": "RUNNING"})

    return handler


def test_token_username_comes_from_introspect_token(clean_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-good")
    monkeypatch.setenv("KAGGLE_USERNAME", "someone-else")
    seen = []
    client = KaggleClient(
        API,
        retry=RetryPolicy.fast(),
        transport=httpx.MockTransport(introspecting_server({"tok-good": "alice"}, seen)),
    )
    assert client.username == "alice"
    client.status("alice", "x")
    assert seen[0][0] == "IntrospectToken"
    assert all(auth == "Bearer tok-good" for _, auth in seen)
    assert [m for m, _ in seen].count("IntrospectToken") == 1


def test_rejected_token_falls_back_to_kaggle_json(clean_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-expired")
    write_kaggle_json(clean_env / ".kaggle", username="alice", key="json-key")
    seen = []
    client = KaggleClient.from_env(
        retry=RetryPolicy.fast(), transport=httpx.MockTransport(introspecting_server({}, seen))
    )
    client.status("alice", "x")
    assert client.username == "alice" and client.credentials.kind == "basic"
    assert seen[-1] == ("GetKernelSessionStatus", httpx.BasicAuth("alice", "json-key")._auth_header)


def test_from_env_uses_the_env_api_root(clean_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    monkeypatch.setenv("ORCHESTRATE_KAGGLE_API", "http://127.0.0.1:7777/api/v1")
    with KaggleClient.from_env() as client:
        assert client.api_url == "http://127.0.0.1:7777/api/v1" and client.username == "alice"


def test_credentials_need_a_secret():
    with pytest.raises(ValueError):
        Credentials(username="alice")
    with pytest.raises(ValueError):
        Credentials(username=None, key="k")
