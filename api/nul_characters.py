"""Refuse NUL characters anywhere in a request, naming where they were.

PostgreSQL cannot store a NUL (``\\x00``) in text, so a NUL in any field, query parameter or
path segment would become a database error (a 500) at the first write or lookup. JSON and
form bodies may carry one legally (``"\\u0000"``); no field Nudge keeps has a use for it, so
one check before any route runs answers 422 with the place, like any other invalid field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

NUL = "\x00"
MESSAGE = "must not contain NUL characters (\\u0000)"


async def refuse_nul_characters(request: Request) -> None:
    places = [*_in_url(request), *await _in_body(request)]
    if places:
        raise RequestValidationError(
            [{"type": "nul_character", "loc": loc, "msg": MESSAGE, "input": None} for loc in places]
        )


def _in_url(request: Request) -> Iterator[tuple[str | int, ...]]:
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            yield ("path", name)
    for name, value in request.query_params.multi_items():
        if NUL in name or NUL in value:
            yield ("query", name.replace(NUL, ""))


async def _in_body(request: Request) -> list[tuple[str | int, ...]]:
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return []
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        raw = await request.body()  # read once: the route reads the same cached bytes
        if b"\\u0000" not in raw and b"\x00" not in raw:
            return []  # the common case costs one scan of bytes, no second parse
        try:
            return [("body", *loc) for loc in _strings_with_nul(json.loads(raw))]
        except ValueError:
            return []  # not JSON: the route's own parsing says so
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()  # cached on the request: the route reads the same form
        return [("body", name) for name, value in form.multi_items() if NUL in str(value)]
    return []


def _strings_with_nul(
    value: Any, at: tuple[str | int, ...] = ()
) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        if NUL in value:
            yield at
    elif isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                yield (*at, key.replace(NUL, ""))
            yield from _strings_with_nul(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings_with_nul(item, (*at, index))
