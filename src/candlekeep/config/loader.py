"""Reading candlekeep.yaml: YAML, then ``${ENV}`` interpolation, then validation.

Every error is a ConfigError naming the file, the key path (``sources.binance.exchange``),
what is wrong and how to fix it, raised before any work starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from candlekeep.config import ccxt_facts
from candlekeep.config.models import Config, SeriesConfig
from candlekeep.config.scans import SCAN_PROFILES, PremoveConfig
from candlekeep.config.source_types import (
    HYPERLIQUID_TIMEFRAMES,
    SOURCE_TYPES,
    CcxtSourceConfig,
    CoinGeckoSourceConfig,
    HyperliquidSourceConfig,
)
from candlekeep.config.store_types import STORE_TYPES, BufferStoreConfig
from candlekeep.core.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def default_config_path() -> Path:
    return Path(os.environ.get("CANDLEKEEP_CONFIG", "candlekeep.yaml"))


def _key(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _interpolate(node: Any, path: tuple[str | int, ...], file: str,
                 env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, (*path, str(k)), file, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*path, i), file, env) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(file, _key(path), f"environment variable {name} is not set",
                          f"export {name}=… or write ${{{name}:-default}}")

    whole = _ENV.fullmatch(node)
    value = _ENV.sub(sub, node)
    if whole and value == "":
        return "" if whole.group(2) is not None else value
    return value


def _first_error(exc: ValidationError, file: str, raw: Any) -> ConfigError:
    err = exc.errors()[0]
    # discriminator names pydantic puts into the path
    tags = ("email", "webhook", "heartbeat", *SOURCE_TYPES, *STORE_TYPES)
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in tags))
    key = _key(loc)
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ")
    fix = ""
    if kind == "extra_forbidden":
        msg = "unknown key"
        valid = _valid_keys(loc[:-1])
        fix = f"valid keys: {', '.join(valid)}" if valid else "remove it or check its spelling"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "literal_error":
        fix = msg.replace("Input should be", "use")
        msg = f"invalid value {err.get('input')!r}"
    elif kind == "union_tag_invalid":
        fix = msg
        msg = f"unknown type {err.get('input', {}).get('type')!r}" if isinstance(
            err.get("input"), dict) else msg
    elif kind == "union_tag_not_found":
        msg = "needs a 'type' key"
    return ConfigError(file, key, msg, fix)


def _valid_keys(loc: tuple[str | int, ...]) -> list[str] | None:
    """The keys the model at ``loc`` (under Config) accepts, when a plain walk through
    models, dicts, lists and optionals finds one model there."""
    at: Any = Config
    parts = list(loc)
    while True:
        args = [a for a in get_args(at) if a is not type(None)]
        if get_origin(at) in (UnionType, Union) and len(args) == 1:
            at = args[0]
            continue
        if get_origin(at) in (dict, list):
            if not parts:
                return None
            at, parts = args[-1], parts[1:]
            continue
        if not (isinstance(at, type) and issubclass(at, BaseModel)):
            return None
        if not parts:
            return list(at.model_fields)
        field = at.model_fields.get(parts[0]) if isinstance(parts[0], str) else None
        if field is None:
            return None
        at, parts = field.annotation, parts[1:]


def parse_config(raw: Any, file: str, base_dir: Path,
                 env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-loaded YAML tree; relative paths resolve against ``base_dir``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "the top level must be a mapping of keys",
                          "see examples/candlekeep.yaml")
    raw = _interpolate(raw, (), file, os.environ if env is None else env)
    raw.setdefault("config_path", str(Path(file).resolve()) if file != "<string>" else None)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, file, raw) from None
    cfg = _resolve_paths(cfg, base_dir)
    _check_references(cfg, file)
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    file = Path(path) if path is not None else default_config_path()
    if not file.exists():
        raise ConfigError(str(file), "", "config file not found",
                          "pass --config PATH, set CANDLEKEEP_CONFIG, or run 'candlekeep demo' "
                          "for a working example")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(file), where, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          "check indentation and quoting") from None
    return parse_config(raw, str(file), file.resolve().parent)


def _resolve(base: Path, p: Path | str) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else base / p


def _resolve_paths(cfg: Config, base: Path) -> Config:
    data_dir = _resolve(base, cfg.data_dir)
    stores = {
        name: s.model_copy(update={"path": str(_resolve(base, s.path))})
        if hasattr(s, "path") else s
        for name, s in cfg.stores.items()
    }
    state = cfg.state
    if state and state.startswith("sqlite:///") and not state.startswith("sqlite:////"):
        rel = state.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            state = f"sqlite:///{_resolve(base, rel)}"
    return cfg.model_copy(update={"data_dir": data_dir, "stores": stores, "state": state})


def _check_references(cfg: Config, file: str) -> None:
    if cfg.series and not cfg.stores:
        raise ConfigError(file, "stores", "series are configured but no store is",
                          "add e.g. stores: {main: {type: duckdb, path: data/candles.duckdb}}")
    for name, store in cfg.stores.items():
        if isinstance(store, BufferStoreConfig):
            for i, target in enumerate(store.targets):
                other = cfg.stores.get(target)
                if other is None or isinstance(other, BufferStoreConfig):
                    raise ConfigError(
                        file, f"stores.{name}.targets[{i}]",
                        f"{target!r} is not a database store" if other else
                        f"unknown store {target!r}",
                        "targets name duckdb, postgresql or clickhouse stores: "
                        + (", ".join(n for n, s in cfg.stores.items()
                                     if not isinstance(s, BufferStoreConfig)) or "none defined"))
            if len(set(store.targets)) != len(store.targets):
                raise ConfigError(file, f"stores.{name}.targets", "a target is listed twice",
                                  "list each store once")
    _check_buffer_folders(cfg, file)
    for name, src in cfg.sources.items():
        if isinstance(src, CcxtSourceConfig):
            _check_ccxt_exchange(file, f"sources.{name}.exchange", src.exchange)
            _check_bulk(file, name, src)
    for i, s in enumerate(cfg.series):
        key = f"series[{i}]"
        if s.source not in cfg.sources:
            raise ConfigError(file, f"{key}.source", f"unknown source {s.source!r}",
                              f"defined sources: {', '.join(cfg.sources) or 'none'}")
        if s.store is not None and s.store not in cfg.stores:
            raise ConfigError(file, f"{key}.store", f"unknown store {s.store!r}",
                              f"defined stores: {', '.join(cfg.stores) or 'none'}")
        if s.start is not None and s.end is not None and s.end <= s.start:
            raise ConfigError(file, f"{key}.end", "end must be after start")
        for where, name in ((f"{key}.source", s.source),
                            *((f"{key}.fallback[{j}]", n) for j, n in enumerate(s.fallback))):
            if isinstance(cfg.sources.get(name), CoinGeckoSourceConfig):
                raise ConfigError(file, where, f"source {name!r} is a coingecko source, which "
                                  "has no exchange candles for series",
                                  "fetch these coins with a job of type coingecko_prices "
                                  "(params: source, coins, timeframe, lookback)")
        _check_timeframes(file, key, s.timeframes, cfg.sources[s.source], s.source)
        _check_fallback(cfg, file, key, s)
    _check_accounts(cfg, file)
    _check_coingecko(cfg, file)
    names = [j.name for j in cfg.jobs]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(file, f"jobs[{i}].name", f"duplicate job name {name!r}",
                              "job names must be unique")
    _check_operations(cfg, file, names)
    _check_scans(cfg, file)


def _check_fallback(cfg: Config, file: str, key: str, s: SeriesConfig) -> None:
    """Fallbacks name other defined sources, once each, that serve the series' timeframes."""
    for j, name in enumerate(s.fallback):
        where = f"{key}.fallback[{j}]"
        if name not in cfg.sources:
            raise ConfigError(file, where, f"unknown source {name!r}",
                              f"defined sources: {', '.join(cfg.sources) or 'none'}")
        if name == s.source:
            raise ConfigError(file, where, f"{name!r} is the series' own source",
                              "list other sources to fetch from when it fails")
        if s.fallback.index(name) != j:
            raise ConfigError(file, where, f"{name!r} is listed twice", "list each once")
        _check_timeframes(file, key, s.timeframes, cfg.sources[name], name)


def _check_timeframes(file: str, key: str, timeframes: list[str], src: object,
                      source: str) -> None:
    """Each timeframe is one the source ``source`` serves (where that is known offline)."""
    if isinstance(src, HyperliquidSourceConfig):
        for j, tf in enumerate(timeframes):
            if tf not in HYPERLIQUID_TIMEFRAMES:
                raise ConfigError(
                    file, f"{key}.timeframes[{j}]",
                    f"Hyperliquid (source {source!r}) does not serve timeframe {tf!r} on "
                    "candlekeep's grid",
                    "it serves: " + ", ".join(sorted(HYPERLIQUID_TIMEFRAMES, key=_tf_order)))
    if isinstance(src, CcxtSourceConfig):
        supported = ccxt_facts.timeframes(src.exchange)
        for j, tf in enumerate(timeframes):
            if supported and tf not in supported:
                raise ConfigError(
                    file, f"{key}.timeframes[{j}]",
                    f"exchange {src.exchange!r} (source {source!r}) does not serve "
                    f"timeframe {tf!r}",
                    f"it serves: {', '.join(sorted(supported, key=_tf_order))}")


def _check_operations(cfg: Config, file: str, jobs: list[str]) -> None:
    """Freshness rules, alert channels and rules, and reports name things that exist."""
    watched: set[tuple[str, str]] = set()
    for i, d in enumerate(cfg.freshness.datasets):
        if (d.store, d.dataset) in watched:
            raise ConfigError(file, f"freshness.datasets[{i}]",
                              f"dataset {d.dataset!r} of store {d.store!r} is listed twice",
                              "list each dataset once")
        watched.add((d.store, d.dataset))
        if d.store not in cfg.stores:
            raise ConfigError(file, f"freshness.datasets[{i}].store", f"unknown store {d.store!r}",
                              f"defined stores: {', '.join(cfg.stores) or 'none'}")
    channels = cfg.alerts.channels
    for name, ch in channels.items():
        if ch.type == "email" and cfg.smtp is None:
            raise ConfigError(file, f"alerts.channels.{name}", "an email channel needs a mail "
                              "server", "add smtp: {host: …, from: …} at the top level")
        if ch.type == "heartbeat":
            for j, job in enumerate(ch.jobs):
                if job not in jobs:
                    raise ConfigError(file, f"alerts.channels.{name}.jobs[{j}]",
                                      f"unknown job {job!r}",
                                      f"defined jobs: {', '.join(jobs) or 'none'}")
    for i, rule in enumerate(cfg.alerts.rules):
        for j, ch_name in enumerate(rule.channels):
            if ch_name not in channels:
                raise ConfigError(file, f"alerts.rules[{i}].channels[{j}]",
                                  f"unknown channel {ch_name!r}",
                                  f"defined channels: {', '.join(channels) or 'none'}")
            if channels[ch_name].type == "heartbeat":
                raise ConfigError(file, f"alerts.rules[{i}].channels[{j}]",
                                  f"{ch_name!r} is a heartbeat channel",
                                  "heartbeats are pinged by their own jobs list, not by rules")
        for j, job in enumerate(rule.jobs or []):
            if job not in jobs:
                raise ConfigError(file, f"alerts.rules[{i}].jobs[{j}]", f"unknown job {job!r}",
                                  f"defined jobs: {', '.join(jobs) or 'none'}")
    for i, jc in enumerate(cfg.jobs):
        wanted = jc.params.get("report") if jc.type == "report" else None
        if isinstance(wanted, str) and wanted not in cfg.reports:
            raise ConfigError(file, f"jobs[{i}].params.report", f"unknown report {wanted!r}",
                              f"defined reports: {', '.join(cfg.reports) or 'none'}")
    if cfg.reports and cfg.smtp is None:
        name = next(iter(cfg.reports))
        raise ConfigError(file, f"reports.{name}", "reports are mailed but no mail server is "
                          "configured", "add smtp: {host: …, from: …} at the top level")


_UNIVERSE_JOBS = ("regime", "scan", "orderbook")


def _check_scans(cfg: Config, file: str) -> None:
    """Universes name defined sources and stores, scan profiles are known ones, each
    regime indicator's calm threshold lies on its calm side of the volatile one, and jobs
    that read a universe name a defined one."""
    for name, u in cfg.universes.items():
        if u.source not in cfg.sources:
            raise ConfigError(file, f"universes.{name}.source", f"unknown source {u.source!r}",
                              f"defined sources: {', '.join(cfg.sources) or 'none'}")
        if u.store is not None and u.store not in cfg.stores:
            raise ConfigError(file, f"universes.{name}.store", f"unknown store {u.store!r}",
                              f"defined stores: {', '.join(cfg.stores) or 'none'}")
        if u.symbols is not None and not u.symbols:
            raise ConfigError(file, f"universes.{name}.symbols", "the list is empty",
                              "list symbols, or use top: {n: ..., days: ...}")
    for profile in cfg.scans.profiles:
        if profile == "premove":
            raise ConfigError(file, "scans.profiles.premove", "the pre-movement gates are not "
                              "set under scans.profiles",
                              "set them under scans.premove; its keys: "
                              + ", ".join(PremoveConfig.model_fields))
        if profile not in SCAN_PROFILES:
            gated = ", ".join(p for p in SCAN_PROFILES if p != "premove")
            raise ConfigError(file, f"scans.profiles.{profile}", f"unknown profile {profile!r}",
                              f"valid profiles: {gated} (premove: scans.premove)")
    r = cfg.regime
    for key, calm_low in (("volatility", True), ("above_ma", False), ("breadth", False)):
        v = getattr(r, key)
        if (v.calm >= v.volatile) if calm_low else (v.calm <= v.volatile):
            side = "below" if calm_low else "above"
            raise ConfigError(file, f"regime.{key}",
                              f"calm ({v.calm:g}) must be {side} volatile ({v.volatile:g})",
                              f"{key} votes calm {side} its calm threshold")
    for i, job in enumerate(cfg.jobs):
        wanted = job.params.get("universe")
        if job.type in _UNIVERSE_JOBS and wanted is not None and wanted not in cfg.universes:
            raise ConfigError(file, f"jobs[{i}].params.universe", f"unknown universe {wanted!r}",
                              f"defined universes: {', '.join(cfg.universes) or 'none'}")


def _check_buffer_folders(cfg: Config, file: str) -> None:
    """Two buffers in one folder (or one inside the other) would flush and delete each
    other's files, which the other's targets never received."""
    folders = [(name, Path(s.path).resolve()) for name, s in cfg.stores.items()
               if isinstance(s, BufferStoreConfig)]
    for i, (name, path) in enumerate(folders):
        for other, other_path in folders[:i]:
            if path == other_path or other_path in path.parents or path in other_path.parents:
                raise ConfigError(file, f"stores.{name}.path",
                                  f"shares its folder with buffer {other!r} ({other_path})",
                                  "give every buffer a folder of its own, not inside another's")


def _tf_order(tf: str) -> tuple[int, str]:
    from candlekeep.core.timeframes import TIMEFRAMES
    return (TIMEFRAMES.get(tf, 1 << 62), tf)


def _check_accounts(cfg: Config, file: str) -> None:
    from candlekeep.config.source_types import HyperliquidSourceConfig

    seen: dict[str, int] = {}
    for i, acct in enumerate(cfg.accounts):
        key = f"accounts[{i}]"
        if acct.name in seen:
            raise ConfigError(file, f"{key}.name", f"account name {acct.name!r} is used twice",
                              f"accounts[{seen[acct.name]}] has it already; names are unique")
        seen[acct.name] = i
        src = cfg.sources.get(acct.source)
        if src is None:
            raise ConfigError(file, f"{key}.source", f"unknown source {acct.source!r}",
                              f"defined sources: {', '.join(cfg.sources) or 'none'}")
        if not isinstance(src, HyperliquidSourceConfig):
            raise ConfigError(file, f"{key}.source",
                              f"source {acct.source!r} (type {src.type}) has no account data",
                              "name a source of type hyperliquid")
    by_address: dict[str, int] = {}
    for i, acct in enumerate(cfg.accounts):
        if acct.address in by_address:
            first = cfg.accounts[by_address[acct.address]]
            raise ConfigError(
                file, f"accounts[{i}].address",
                f"address {acct.address} is already accounts[{by_address[acct.address]}] "
                f"({first.name}, source {first.source})",
                "list each wallet once: its rows are keyed by address, so two entries (even "
                "on mainnet and testnet) would be merged; use another wallet for the other "
                "network")
        by_address[acct.address] = i


COINGECKO_JOBS = ("coingecko_prices", "coingecko_quality")


def _check_coingecko(cfg: Config, file: str) -> None:
    """CoinGecko sources and jobs: what can be known without the network (which coin a
    symbol means needs CoinGecko's coin list: the job resolves it when it runs)."""
    from candlekeep.sources.coingecko.granularity import possible, timeframe_problem

    for name, src in cfg.sources.items():
        if isinstance(src, CoinGeckoSourceConfig) and src.plan == "pro" and src.api_key is None:
            raise ConfigError(file, f"sources.{name}.api_key", "the pro plan needs an API key",
                              "set api_key: ${COINGECKO_API_KEY} (a pro key), or plan: demo")
    for i, jc in enumerate(cfg.jobs):
        if jc.type not in COINGECKO_JOBS:
            continue
        key = f"jobs[{i}].params"
        source = jc.params.get("source")
        if not isinstance(source, str):
            continue  # the params model reports a missing or mistyped source
        cg = cfg.sources.get(source)
        if not isinstance(cg, CoinGeckoSourceConfig):
            names = [n for n, s in cfg.sources.items() if isinstance(s, CoinGeckoSourceConfig)]
            raise ConfigError(file, f"{key}.source",
                              f"unknown source {source!r}" if cg is None else
                              f"source {source!r} (type {cg.type}) is not a coingecko source",
                              f"coingecko sources: {', '.join(names) or 'none defined'}")
        timeframe, endpoint = jc.params.get("timeframe"), jc.params.get("endpoint")
        if isinstance(timeframe, str) and endpoint in (None, "market_chart", "ohlc"):
            problem = timeframe_problem(cg.plan, timeframe, endpoint)
            if problem:
                raise ConfigError(file, f"{key}.timeframe", problem,
                                  f"possible: {possible(cg.plan)}")
        coins = jc.params.get("coins")
        if isinstance(coins, list):
            seen: dict[str, int] = {}
            for j, coin in enumerate(coins):
                if isinstance(coin, str) and coin.strip().lower() in seen:
                    raise ConfigError(file, f"{key}.coins[{j}]", f"coin {coin!r} is listed "
                                      f"twice (coins[{seen[coin.strip().lower()]}])",
                                      "list each coin once")
                if isinstance(coin, str):
                    seen[coin.strip().lower()] = j


def _check_bulk(file: str, name: str, src: CcxtSourceConfig) -> None:
    from candlekeep.sources.binance_archive.paths import archive_exchanges, archive_market

    if src.bulk is None or not src.bulk.enabled:
        return
    if archive_market(src.exchange, src.market_type) is None:
        raise ConfigError(
            file, f"sources.{name}.bulk",
            f"the bulk archive serves Binance only, not {src.exchange} {src.market_type}",
            f"remove the bulk block or set enabled: false (served: "
            f"{', '.join(archive_exchanges())})")
    if not src.bulk.base_url.startswith(("http://", "https://")):
        raise ConfigError(file, f"sources.{name}.bulk.base_url",
                          f"not an http(s) URL: {src.bulk.base_url!r}",
                          "use e.g. https://data.binance.vision")


def _check_ccxt_exchange(file: str, key: str, exchange: str) -> None:
    known = ccxt_facts.exchange_ids()
    if exchange not in known:
        import difflib

        close = difflib.get_close_matches(exchange, known, n=3)
        fix = f"did you mean {', '.join(close)}?" if close else "see ccxt.exchanges for ids"
        raise ConfigError(file, key, f"unknown CCXT exchange id {exchange!r}", fix)

