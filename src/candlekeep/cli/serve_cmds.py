"""``candlekeep serve``: the HTTP API (and dashboard) without the scheduler.

The daemon serves the same API itself when the config has ``api:``; this command is for
hosts that only read (a dashboard next to a PostgreSQL state DB) or for a quick look.
FastAPI and uvicorn are imported when the command runs, never by other commands.
"""

from __future__ import annotations

import logging

import typer

from candlekeep.cli import common
from candlekeep.cli.common import err_console, friendly_errors


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def serve(
        ctx: typer.Context,
        host: str | None = typer.Option(None, "--host", help="Address to listen on "
                                        "(default: api.listen's, else 127.0.0.1)."),
        port: int | None = typer.Option(None, "--port", min=0, max=65535,
                                        help="Port (default: api.listen's, else 8765; "
                                        "0 picks a free one)."),
        insecure: bool = typer.Option(False, "--insecure", help="Serve a non-loopback "
                                      "address without api.token (behind a proxy that "
                                      "authenticates)."),
    ) -> None:
        """Serve the HTTP API, /metrics and the dashboard until Ctrl-C."""
        from candlekeep.api.app import create_app
        from candlekeep.api.server import address, bind, check_exposure, server, share_logging
        from candlekeep.config.ops import ApiConfig
        from candlekeep.scheduler.validate import load_jobs

        st = common.state(ctx)
        cfg = st.config()
        api = cfg.api or ApiConfig()
        where = host or api.host
        check_exposure(where, api.token is not None, insecure or api.insecure)
        specs = load_jobs(cfg)
        sock = bind(where, api.port if port is None else port)
        share_logging(logging.INFO if st.verbose else logging.WARNING)
        err_console.print(f"serving the API on {address(sock)} (docs at /docs)",
                          highlight=False, soft_wrap=True)
        srv = server(create_app(cfg, specs), access_log=st.verbose > 0)
        srv.run(sockets=[sock])
