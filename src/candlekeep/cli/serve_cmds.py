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
        keep: float | None = typer.Option(
            None, "--answer-cache", min=0, hidden=True,
            help="Benchmarks and debugging: seconds /ingestion/status and /metrics answers "
                 "are reused (default 1; 0 computes every request)."),
    ) -> None:
        """Serve the HTTP API, /metrics and the dashboard until Ctrl-C."""
        from candlekeep.api.server import ApiServer, share_logging
        from candlekeep.scheduler.validate import load_jobs

        st = common.state(ctx)
        cfg = st.config()
        srv = ApiServer(cfg, load_jobs(cfg), host=host, port=port, insecure=insecure,
                        access_log=st.verbose > 0, keep_s=keep)
        share_logging(logging.INFO if st.verbose else logging.WARNING)
        url = srv.open()
        err_console.print(f"serving the API on {url} (docs at /docs)", highlight=False,
                          soft_wrap=True)
        srv.run()
