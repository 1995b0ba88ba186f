"""Find Kaggle credentials exactly where the official CLI (kaggle 2.2.x) finds them.

Order, as `KaggleApi.authenticate` does it:
1. an access token (Bearer): inside a Kaggle notebook the file named by `KAGGLE_API_V1_TOKEN`,
   else `KAGGLE_API_TOKEN` (the token itself, or a path to a file holding it), else
   `~/.kaggle/access_token` (or `access_token.txt`);
2. the legacy API key (HTTP Basic): `kaggle.json` from `KAGGLE_CONFIG_DIR`, else `~/.kaggle`, else
   (Linux, when `~/.kaggle` does not exist) `$XDG_CONFIG_HOME/kaggle` or `~/.config/kaggle`, with
   every `KAGGLE_*` variable laid over it (`KAGGLE_USERNAME`, `KAGGLE_KEY`).
The official CLI confirms a token's username with IntrospectToken; `KaggleClient` does that on first use.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import CredentialsNotFound

logger = logging.getLogger(__name__)

REDACTED = "***"


@dataclass(frozen=True)
class Credentials:
    """One set of Kaggle credentials. Neither the key nor the token ever shows in repr or str."""

    username: str | None
    key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = "explicit"

    def __post_init__(self) -> None:
        if not self.key and not self.token:
            raise ValueError("Credentials need a key (with a username) or an access token")
        if self.key and not self.token and not self.username:
            raise ValueError("Credentials with an API key also need a username")

    @property
    def kind(self) -> str:
        """`bearer` for an access token, `basic` for a legacy username + key."""
        return "bearer" if self.token else "basic"

    def auth(self) -> httpx.Auth:
        if self.token:
            return _BearerAuth(self.token)
        return httpx.BasicAuth(self.username or "", self.key or "")

    def secrets(self) -> list[str]:
        """Every string that must never be shown, for redaction."""
        import base64

        found = [s for s in (self.key, self.token) if s]
        if self.key:
            found.append(base64.b64encode(f"{self.username}:{self.key}".encode()).decode())
        return found

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, kind={self.kind!r}, source={self.source!r}, secret={REDACTED!r})"

    __str__ = __repr__


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return f"_BearerAuth({REDACTED})"


def kaggle_config_dir() -> Path:
    """The folder the official CLI reads `kaggle.json` from."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser()
    legacy = Path("~/.kaggle").expanduser()
    if sys.platform.startswith("linux") and not legacy.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
        return Path(xdg) / "kaggle"
    return legacy


def _read_token_file(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value or None


def find_access_token() -> tuple[str | None, str]:
    """Return (token, where it came from), or (None, a description of the places looked at)."""
    in_notebook = os.environ.get("KAGGLE_KERNEL_RUN_TYPE") is not None and os.environ.get(
        "KAGGLE_DATA_PROXY_URL"
    )
    if in_notebook and os.environ.get("KAGGLE_API_V1_TOKEN"):
        token = _read_token_file(Path(os.environ["KAGGLE_API_V1_TOKEN"]))
        if token:
            return token, "KAGGLE_API_V1_TOKEN"
    value = os.environ.get("KAGGLE_API_TOKEN")
    if value:
        if Path(value).exists():
            token = _read_token_file(Path(value))
            if token:
                return token, "KAGGLE_API_TOKEN (file)"
        else:
            return value, "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        path = Path("~/.kaggle").expanduser() / name
        token = _read_token_file(path) if path.exists() else None
        if token:
            return token, str(path)
    return None, "KAGGLE_API_TOKEN, ~/.kaggle/access_token"


def _warn_if_readable_by_others(path: Path) -> None:
    if os.name == "nt":
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning(
            "Your Kaggle API key in %s is readable by other users on this system; fix: chmod 600 %s",
            path,
            path,
        )


def read_legacy_config() -> tuple[dict[str, str], Path]:
    """kaggle.json (if any) overlaid with every KAGGLE_* variable, as the official CLI merges them."""
    path = kaggle_config_dir() / "kaggle.json"
    config: dict[str, str] = {}
    if path.exists():
        _warn_if_readable_by_others(path)
        try:
            loaded = json.loads(path.read_text() or "{}")
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring %s: not readable JSON (%s)", path, type(exc).__name__)
            loaded = {}
        if isinstance(loaded, dict):
            config = {str(k): str(v) for k, v in loaded.items() if v is not None}
    for name, value in os.environ.items():
        if name.startswith("KAGGLE_"):
            config[name.replace("KAGGLE_", "", 1).lower()] = value
    return config, path


def discover_credentials(*, include_token: bool = True) -> Credentials:
    """Credentials from the environment and config files, first match wins (see the module doc).

    A token's username is only a hint here (from KAGGLE_USERNAME / kaggle.json); the client confirms
    it with IntrospectToken, and falls back to `discover_credentials(include_token=False)` when the
    token is rejected, as the official CLI does.
    """
    config, config_path = read_legacy_config()
    token_places = "KAGGLE_API_TOKEN, ~/.kaggle/access_token"
    if include_token:
        token, where = find_access_token()
        if token:
            return Credentials(username=config.get("username"), token=token, source=where)
        token_places = where
    username, key = config.get("username"), config.get("key")
    if username and key:
        env_overlay = "KAGGLE_USERNAME" in os.environ or "KAGGLE_KEY" in os.environ
        source = f"{config_path}{' + environment' if env_overlay else ''}"
        if not config_path.exists():
            source = "KAGGLE_USERNAME/KAGGLE_KEY"
        return Credentials(username=username, key=key, source=source)
    missing = "no username" if key else "no key" if username else "no username and key"
    raise CredentialsNotFound(
        f"No Kaggle credentials found (looked at {token_places}, {config_path} and "
        f"KAGGLE_USERNAME/KAGGLE_KEY: {missing}); fix: save an API token from "
        "https://www.kaggle.com/settings to ~/.kaggle/access_token, or put kaggle.json (chmod 600) "
        "in ~/.kaggle"
    )
