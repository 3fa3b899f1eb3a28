"""Every 422 in FastAPI's own shape (``{"detail": [{"loc", "msg", "type", ...}]}``), in words a
person understands: invalid JSON says where, a body sent without ``Content-Type:
application/json`` says so, a misspelled field is one error ("did you mean"), not a missing
field plus an unknown one, and nothing the caller sent is echoed back longer than
``ECHO`` characters (a 1 MB text must not come back in the error about it).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.status import HTTP_422_UNPROCESSABLE_CONTENT

ECHO = 200
"""Characters of an input (or of a value in ``ctx``) a 422 repeats; the rest is cut."""
SEND_JSON = "send the body as JSON with Content-Type: application/json"
NOT_AN_OBJECT = {"model_attributes_type", "model_type", "dict_type"}


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """The handler for ``RequestValidationError`` (installed by ``service.py``)."""
    assert isinstance(exc, RequestValidationError)
    whole = any(_about_the_whole_body(error) for error in exc.errors())
    body = await _body(request) if whole else b""
    errors = readable(exc.errors(), body=body, content_type=request.headers.get("content-type"))
    return JSONResponse({"detail": jsonable_encoder(errors)}, HTTP_422_UNPROCESSABLE_CONTENT)


def _about_the_whole_body(error: Any) -> bool:
    return bool(error.get("type") == "json_invalid" or list(error.get("loc", ())) == ["body"])


async def _body(request: Request) -> bytes:
    try:
        return await request.body()  # FastAPI read and kept it before finding it wrong
    except RuntimeError:  # read as a form, which keeps no bytes: nothing about JSON to say
        return b""


def readable(
    errors: Sequence[Any], *, body: bytes = b"", content_type: str | None = None
) -> list[dict[str, Any]]:
    """``errors`` reworded where FastAPI's words say little, and cut where they echo much."""
    found = _one_per_typo([dict(error) for error in errors])
    return [_cut(_reworded(error, body, content_type)) for error in found]


def _reworded(error: dict[str, Any], body: bytes, content_type: str | None) -> dict[str, Any]:
    loc = list(error.get("loc", ()))
    kind = error.get("type")
    if kind == "json_invalid":
        return {"loc": ["body"], "msg": _json_problem(body, error), "type": kind}
    if loc == ["body"] and (kind in NOT_AN_OBJECT or (kind == "missing" and not body)):
        if not body:
            msg = f"the request has no body; {SEND_JSON}"
        elif _is_json(content_type):
            msg = "the body must be a JSON object ({...}), not a " + _json_kind(body)
        else:
            sent = f"Content-Type: {content_type}" if content_type else "no Content-Type"
            msg = f"{SEND_JSON} (the request had {sent})"
        return {"loc": loc, "msg": msg, "type": kind}
    msg = str(error.get("msg", ""))
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    return {**error, "msg": msg}


def _one_per_typo(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A misspelled required field is reported by pydantic twice: ``missing`` (the right
    name) and ``extra_forbidden`` (the wrong one). One typo, one error: the wrong name, with
    the right one suggested."""
    missing = {
        tuple(error["loc"]): index
        for index, error in enumerate(errors)
        if error.get("type") == "missing" and error.get("loc")
    }
    dropped: set[int] = set()
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if error.get("type") != "extra_forbidden" or not loc or not isinstance(loc[-1], str):
            continue
        siblings = {
            str(other[-1]): other
            for other in missing
            if other[:-1] == loc[:-1] and missing[other] not in dropped
        }
        match = difflib.get_close_matches(loc[-1], list(siblings), n=1, cutoff=0.6)
        if match:
            dropped.add(missing[siblings[match[0]]])
            error["msg"] = f"{loc[-1]!r} is not a field; did you mean {match[0]!r}?"
        else:
            error["msg"] = f"{loc[-1]!r} is not a field here"
    return [error for index, error in enumerate(errors) if index not in dropped]


def _json_problem(body: bytes, error: dict[str, Any]) -> str:
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        return f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    except (UnicodeDecodeError, ValueError):
        return "the body is not valid JSON: it is not UTF-8 text"
    detail = str(error.get("ctx", {}).get("error", "")) or "it cannot be read"
    return f"the body is not valid JSON: {detail}"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _json_kind(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return "value that is not JSON"
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _cut(error: dict[str, Any]) -> dict[str, Any]:
    """``input`` and every ``ctx`` value at most ``ECHO`` characters (a structure longer
    than that as JSON is shown as the start of its JSON text)."""
    if "input" in error:
        error["input"] = _short(error["input"])
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        error["ctx"] = {key: _short(value) for key, value in ctx.items()}
    return error


def _short(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, BaseException):
        value = str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if not isinstance(value, str):
        try:
            text = json.dumps(jsonable_encoder(value), ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(value)
        if len(text) <= ECHO:
            return jsonable_encoder(value)
        value = text
    return value if len(value) <= ECHO else value[:ECHO] + "…"
