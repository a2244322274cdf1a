from pathlib import Path

import pytest
import yaml

from candlekeep.config import load_config
from candlekeep.core.errors import ConfigError

GOOD = {
    "data_dir": "data",
    "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
    "sources": {
        "binance": {"type": "ccxt", "exchange": "binance", "market_type": "spot",
                    "api_key": "${CK_TEST_KEY:-}"},
        "sim": {"type": "sim", "seed": 7},
    },
    "series": [{"source": "binance", "symbols": ["BTC/USDT", "ETH/USDT"],
                "timeframes": ["1m", "1h"], "start": "2025-01-01", "store": "main"}],
}


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "candlekeep.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_good_config_resolves_paths_and_env(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CK_TEST_KEY", "s3cret")
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.stores["main"].path == str(tmp_path / "data/candles.duckdb")
    assert cfg.state_url == f"sqlite:///{tmp_path / 'data' / 'state.db'}"
    assert cfg.series[0].start == 1_735_689_600_000
    src = cfg.sources["binance"]
    assert src.api_key is not None and src.api_key.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert "s3cret" not in repr(cfg)


def mutate(path: str, value: object) -> dict:  # type: ignore[type-arg]
    import copy

    data = copy.deepcopy(GOOD)
    node: dict = data  # type: ignore[type-arg]
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]  # type: ignore[index]
    node[parts[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value", "key", "words"), [
    ("sources.binance.exchange", "binanse", "sources.binance.exchange",
     ["unknown CCXT exchange id 'binanse'", "did you mean binance"]),
    ("series.0.timeframes", ["1m", "2m"], "series[0].timeframes", ["'2m'", "valid: 1m"]),
    ("series.0.store", "nope", "series[0].store", ["unknown store 'nope'", "main"]),
    ("series.0.source", "kraken", "series[0].source", ["unknown source 'kraken'"]),
    ("series.0.start", "2025-13-01", "series[0].start", ["bad date", "YYYY-MM-DD"]),
    ("sources.binance.api_key", "${CK_SURELY_MISSING}", "sources.binance.api_key",
     ["CK_SURELY_MISSING is not set"]),
    ("sources.binance.market_type", "perp", "sources.binance.market_type",
     ["'perp'", "'spot'"]),
    ("sources.binance.bogus", 1, "sources.binance.bogus", ["unknown key"]),
])
def test_bad_config_names_file_key_and_fix(tmp_path: Path, path: str, value: object, key: str,
                                           words: list[str]) -> None:
    file = write(tmp_path, mutate(path, value))
    with pytest.raises(ConfigError) as info:
        load_config(file)
    msg = str(info.value)
    assert msg.startswith(f"{file}: {key}:"), msg
    for w in words:
        assert w in msg


def test_timeframe_the_exchange_lacks(tmp_path: Path) -> None:
    data = mutate("sources.binance.exchange", "bitfinex")
    data["series"][0]["timeframes"] = ["3m"]
    with pytest.raises(ConfigError, match=r"series\[0\].timeframes\[0\]: exchange 'bitfinex' "
                                          r"\(source 'binance'\) does not serve timeframe '3m'"):
        load_config(write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stores: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize(("second", "why"), [
    ("data/buf/", "shares its folder with buffer 'one'"),
    ("data/buf/inner", "shares its folder with buffer 'one'"),
])
def test_buffers_may_not_share_a_folder(tmp_path: Path, second: str, why: str) -> None:
    stores = {"a": {"type": "duckdb", "path": "a.duckdb"},
              "b": {"type": "duckdb", "path": "b.duckdb"},
              "one": {"type": "buffer", "path": "data/buf", "targets": ["a"]},
              "two": {"type": "buffer", "path": second, "targets": ["b"]}}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"stores": stores}))
    assert info.value.key == "stores.two.path" and why in info.value.problem
    stores["two"]["path"] = "data/buf2"  # a sibling is fine
    assert set(load_config(write(tmp_path, {"stores": stores})).stores) == set(stores)


@pytest.mark.parametrize(("targets", "problem"), [
    (["nope"], "unknown store 'nope'"),
    (["a", "a"], "a target is listed twice"),
    (["other"], "'other' is not a database store"),
])
def test_buffer_targets_are_checked(tmp_path: Path, targets: list[str], problem: str) -> None:
    stores = {"a": {"type": "duckdb", "path": "a.duckdb"},
              "other": {"type": "buffer", "path": "o", "targets": ["a"]},
              "buf": {"type": "buffer", "path": "b", "targets": targets}}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"stores": stores}))
    assert problem in info.value.problem and info.value.key.startswith("stores.buf.targets")


def test_hyperliquid_series_timeframes_and_accounts_are_checked(tmp_path: Path) -> None:
    from candlekeep.config import parse_config
    from candlekeep.core.errors import ConfigError

    base = {"stores": {"m": {"type": "duckdb"}}, "sources": {"hl": {"type": "hyperliquid"}}}
    with pytest.raises(ConfigError, match=r"series\[0\]\.timeframes\[1\].*'1w'"):
        parse_config({**base, "series": [{"source": "hl", "symbols": ["BTC/USDC:USDC"],
                                          "timeframes": ["1h", "1w"]}]}, "f.yaml", tmp_path)
    good = "0x" + "ab" * 20
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.address.*'0x12'"):
        parse_config({**base, "accounts": [{"name": "a", "address": "0x12", "source": "hl"}]},
                     "f.yaml", tmp_path)
    with pytest.raises(ConfigError, match=r"accounts\[1\]\.name.*used twice"):
        parse_config({**base, "accounts": [{"name": "a", "address": good, "source": "hl"},
                                           {"name": "a", "address": good, "source": "hl"}]},
                     "f.yaml", tmp_path)
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.source.*no account data"):
        parse_config({**base, "sources": {"hl": {"type": "sim"}},
                      "accounts": [{"name": "a", "address": good, "source": "hl"}]},
                     "f.yaml", tmp_path)
    cfg = parse_config({**base, "accounts": [{"name": "a", "address": good.upper().replace(
        "0X", "0x"), "source": "hl"}]}, "f.yaml", tmp_path)
    assert cfg.accounts[0].address == good
