"""Who is calling: HTTP Basic `user:key`, or `Bearer <key>` (the key doubles as a token)."""

from __future__ import annotations

import base64
import binascii
import secrets

from starlette.requests import Request


def parse_users(text: str) -> dict[str, str]:
    """`alice:KEY,bob:KEY2` -> {"alice": "KEY", "bob": "KEY2"}."""
    users = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, key = item.partition(":")
        if not sep or not name or not key:
            raise ValueError(f"bad user entry {item!r}: write --users NAME:KEY[,NAME2:KEY2]")
        users[name] = key
    if not users:
        raise ValueError("no users given: write --users NAME:KEY[,NAME2:KEY2]")
    return users


def user_for_token(users: dict[str, str], token: str) -> str | None:
    for name, key in users.items():
        if secrets.compare_digest(key.encode(), token.encode()):
            return name
    return None


def authenticate(request: Request, users: dict[str, str]) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return user_for_token(users, value)
    if scheme == "basic" and value:
        try:
            name, _, key = base64.b64decode(value).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = users.get(name)
        if expected is not None and secrets.compare_digest(expected.encode(), key.encode()):
            return name
    return None
