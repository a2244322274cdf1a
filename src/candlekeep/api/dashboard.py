"""The dashboard: one static page and its assets, served from package data.

The page holds no data of its own: the browser reads the API's JSON routes (same origin, so
whatever authenticates the API authenticates the page too) and inserts every value as text.
Nothing from the server is interpolated into HTML here, so there is nothing to escape on
this side, and the dashboard can never say something the API does not.

Assets are read once, at import, into a fixed table: a request names a key of that table and
never reaches the file system, so no path can walk out of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from types import MappingProxyType

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

_MEDIA_TYPES = MappingProxyType({
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
})

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
"""The page runs only its own script and talks only to its own origin: a value that slipped
past the escaping still could not load or run anything."""

_HEADERS = MappingProxyType({
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
})


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str


def _load_assets() -> dict[str, Asset]:
    folder = files("candlekeep.api").joinpath("static")
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _MEDIA_TYPES:
            assets[entry.name] = Asset(entry.read_bytes(), _MEDIA_TYPES[suffix])
    return assets


ASSETS = MappingProxyType(_load_assets())
PAGE = ASSETS["index.html"]

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> Response:
    return Response(PAGE.body, media_type=PAGE.media_type,
                    headers={**_HEADERS, "Content-Security-Policy": CSP})


@router.get("/static/{name}")
def asset(name: str) -> Response:
    found = ASSETS.get(name)
    if found is None or found is PAGE:
        raise HTTPException(status_code=404, detail=f"no dashboard asset {name!r}")
    return Response(found.body, media_type=found.media_type, headers=dict(_HEADERS))
