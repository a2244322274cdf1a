"""The interactive API docs, offline: Swagger UI's files come from the
``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1), not a CDN, so
``/docs`` works on a host without internet access."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from swagger_ui_bundle import swagger_ui_path

from candlekeep.api.auth import Auth

ASSETS = MappingProxyType({
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
})
"""The only files served: a request names one of these, never a path."""


def router(app: FastAPI, auth: Auth) -> APIRouter:
    r = APIRouter(include_in_schema=False, dependencies=[Depends(auth)])
    folder = Path(swagger_ui_path)

    @r.get("/openapi.json")
    def openapi() -> Response:
        return JSONResponse(app.openapi())

    @r.get("/docs")
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title}: API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png")

    @r.get("/docs/assets/{name}")
    def asset(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            raise HTTPException(404, f"no docs asset {name[:100]!r}")
        return FileResponse(folder / name, media_type=media,
                            headers={"Cache-Control": "max-age=86400"})

    return r
