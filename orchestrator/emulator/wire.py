"""Kaggle's JSON wire format, produced and parsed by kagglesdk's own classes.

kagglesdk's serializer has two quirks we correct on the way out: it writes a duration's
`.seconds` component (so 30 h would travel as "21600s"), and it drops fields equal to
their default (so a QUEUED status would vanish). The real server sends both.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kagglesdk.kaggle_object import KaggleObject
from starlette.responses import JSONResponse


def duration(delta: timedelta) -> str:
    """Protobuf JSON duration: whole seconds, with a fraction only when there is one."""
    seconds = delta.total_seconds()
    return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds:.3f}s"


def utc_naive(timestamp: float) -> datetime:
    """kagglesdk appends "Z" to isoformat(), so datetimes must be naive UTC."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).replace(tzinfo=None)


def to_wire(obj: KaggleObject, always: tuple[str, ...] = ()) -> dict:
    """`obj.to_dict()`, with true durations and the `always` fields kept even at default."""
    body = obj.to_dict()
    for field in type(obj)._fields:
        value = getattr(obj, field.private_field_name)
        if value is None:
            continue
        if isinstance(value, timedelta):
            body[field.json_name] = duration(value)
        elif isinstance(value, KaggleObject):
            body[field.json_name] = to_wire(value)
        elif isinstance(value, list) and value and isinstance(value[0], KaggleObject):
            body[field.json_name] = [to_wire(item) for item in value]
        elif field.json_name in always:
            body[field.json_name] = field.serializer.to_dict_value(field.field_type, value, False)
    return body


def ok(obj: KaggleObject, always: tuple[str, ...] = ()) -> JSONResponse:
    return JSONResponse(to_wire(obj, always))


class ApiError(Exception):
    """A request refused: answered with Kaggle's error body (`error`) by the route."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def error(code: int, message: str, headers: dict | None = None) -> JSONResponse:
    """Kaggle's error body; the HTTP status matches `code`."""
    return JSONResponse({"code": code, "message": message}, status_code=code, headers=headers)
