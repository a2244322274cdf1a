"""``candlekeep sim serve``: the simulated exchange as a local Binance-compatible server."""

from __future__ import annotations

import typer

from candlekeep.cli.common import console, friendly_errors

sim_app = typer.Typer(help="The simulated exchange.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    @sim_app.command("serve")
    @friendly_errors
    def serve(
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8765, "--port", min=0, max=65535),
        seed: int = typer.Option(7, "--seed", help="Same seed, same candles."),
        weight_limit: int = typer.Option(6000, "--weight-limit",
                                         help="Spot request weight per window."),
        enforced_weight_limit: int | None = typer.Option(
            None, "--enforced-weight-limit",
            help="Spot weight per window actually enforced, when less than advertised."),
        window: float = typer.Option(60.0, "--window", help="Rate-limit window, seconds."),
        holes_per_day: float = typer.Option(1.0, "--holes-per-day",
                                            help="Exchange-side maintenance holes."),
        late_per_day: float = typer.Option(0.5, "--late-per-day",
                                           help="Late-data windows a repair can fill."),
        error_rate: float = typer.Option(0.0, "--error-rate", help="Share of 5xx bursts."),
        truncate_rate: float = typer.Option(0.0, "--truncate-rate",
                                            help="Share of truncated JSON replies."),
        slow_rate: float = typer.Option(0.0, "--slow-rate", help="Share of slow replies."),
    ) -> None:
        """Serve Binance's spot (/api/v3) and USD-M futures (/fapi/v1) REST formats locally.

        Point a source at it with ``base_url: http://HOST:PORT``.
        """
        from candlekeep.sim.server import serve_options

        console.print(f"sim exchange on http://{host}:{port} (seed {seed}); Ctrl-C stops it",
                      highlight=False)
        serve_options(host, port, seed=seed, weight_limit=weight_limit,
                      enforced_weight_limit=enforced_weight_limit, window_s=window,
                      holes_per_day=holes_per_day, late_per_day=late_per_day,
                      error_rate=error_rate, truncate_rate=truncate_rate, slow_rate=slow_rate)

    app.add_typer(sim_app, name="sim")
