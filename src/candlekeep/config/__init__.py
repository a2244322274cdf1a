"""candlekeep.yaml → validated models. Errors name the file, the key path and the fix."""

from candlekeep.config.loader import default_config_path, load_config, parse_config
from candlekeep.config.models import Config, JobConfig, SeriesConfig
from candlekeep.config.source_types import CcxtSourceConfig, SimSourceConfig
from candlekeep.config.store_types import DuckDBStoreConfig

__all__ = [
    "CcxtSourceConfig",
    "Config",
    "DuckDBStoreConfig",
    "JobConfig",
    "SeriesConfig",
    "SimSourceConfig",
    "default_config_path",
    "load_config",
    "parse_config",
]
