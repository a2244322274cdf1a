"""Pieces every command shares: loading config, running coroutines, output, errors."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from candlekeep.core.errors import CandlekeepError
from candlekeep.logs import setup_logging

if TYPE_CHECKING:
    from candlekeep.config.models import Config

# Piped output (CI logs, `| less`) gets room for wide tables instead of Rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class CliState:
    config_path: Path | None = None
    log_json: bool = False
    verbose: int = 0
    _config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            from candlekeep.config import load_config

            self._config = load_config(self.config_path)
        return self._config


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def configure(ctx: typer.Context, config: Path | None, log_json: bool, verbose: int) -> None:
    st = state(ctx)
    st.config_path = config
    st.log_json = log_json
    st.verbose = verbose
    setup_logging(json_lines=log_json, level=logging.DEBUG if verbose > 1 else (
        logging.INFO if verbose == 1 else logging.WARNING))


def friendly_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Known errors become one red line and exit code 2 instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except CandlekeepError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted; progress so far is saved[/]")
            raise typer.Exit(130) from None

    return wrapper


def run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # not at import time: ``--help`` has no use for it

    return asyncio.run(coro)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
