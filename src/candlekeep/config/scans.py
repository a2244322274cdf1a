"""The scans part of the configuration: universes, regime thresholds, scan profiles.

Structure and defaults only (the issue's numbers); cross-references (a universe's source
and store, a profile's universe) are checked by the loader."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from candlekeep.core.timeutil import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]

STABLECOINS = frozenset({"USDT", "USDC", "DAI", "FDUSD", "TUSD", "BUSD", "USDP", "USDD",
                         "PYUSD", "USDE", "EURC", "EURT", "GUSD", "FRAX", "LUSD", "USD1"})
"""Bases a universe drops with ``exclude_stablecoins`` (a USDC/USDT pair is not a market
view)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopByVolume(_Model):
    """The top ``n`` symbols by average daily quote volume over ``days``, from stored 1d
    candles of ``source`` in ``store``, recomputed every run."""

    n: int = Field(gt=0)
    days: int = Field(default=30, gt=0)
    exclude_stablecoins: bool = True


class UniverseConfig(_Model):
    """``universes.<name>``: a fixed list, or the top by volume (one of the two)."""

    source: str
    store: str | None = None
    symbols: list[str] | None = None
    top: TopByVolume | None = None

    @model_validator(mode="after")
    def _one_way(self) -> UniverseConfig:
        if (self.symbols is None) == (self.top is None):
            raise ValueError("give either symbols: [...] or top: {n: ..., days: ...}")
        return self


class Votes(_Model):
    """An indicator's two thresholds; which side of each votes calm or volatile is the
    indicator's (see ``RegimeConfig``); between them it votes normal."""

    calm: float
    volatile: float


class RegimeConfig(_Model):
    """``regime:``: the three indicators' thresholds (the issue's defaults)."""

    volatility: Votes = Votes(calm=0.25, volatile=0.45)
    """BTC's realised volatility over 7 days (annualised): below calm, above volatile."""
    above_ma: Votes = Votes(calm=0.70, volatile=0.45)
    """Share of the universe above its 20-period MA: above calm, below volatile."""
    breadth: Votes = Votes(calm=0.60, volatile=0.30)
    """Share of advancing symbols: above calm, below volatile."""
    refresh: Duration = 4 * 3600.0
    """How long a verdict stands (``next_refresh``)."""


class Weights(_Model):
    momentum: float = Field(ge=0)
    technical: float = Field(ge=0)
    volume: float = Field(ge=0)
    quality: float = Field(ge=0)


REGIME_WEIGHTS: dict[str, Weights] = {
    "calm": Weights(momentum=0.40, technical=0.30, volume=0.20, quality=0.10),
    "normal": Weights(momentum=0.35, technical=0.25, volume=0.25, quality=0.15),
    "volatile": Weights(momentum=0.30, technical=0.20, volume=0.30, quality=0.20),
}


Profile = Literal["hot", "warm", "custom", "premove"]
"""A scan profile (job type ``scan``'s ``profile``)."""
SCAN_PROFILES: tuple[str, ...] = get_args(Profile)
"""The profiles by name, for config checks, the CLI and error messages."""


class Gates(_Model):
    """A profile's gates; an unset gate is not applied. A value exactly at a threshold
    passes."""

    min_score: float | None = None
    min_vadr: float | None = None
    max_spread_bps: float | None = None
    min_depth_usd: float | None = None


PROFILE_GATES: dict[str, Gates] = {
    "hot": Gates(min_score=75, min_vadr=1.8, max_spread_bps=50, min_depth_usd=100_000),
    "warm": Gates(min_score=65),
}


class PremoveConfig(_Model):
    """The pre-movement gates (2 of 3 alert; volume confirmation in a volatile regime)."""

    funding_z: float = 2.0
    squeeze_quality: float = 70
    squeeze_max_depth_usd: float = 80_000
    accumulation_volume: float = 75
    accumulation_momentum: float = 70
    needed: int = Field(default=2, ge=1, le=3)


class ScansConfig(_Model):
    """``scans:``: gates per profile over the defaults (``hot``, ``warm``; ``custom`` has
    none unless given), the pre-movement gates, and where artifacts go."""

    artifacts: str = "artifacts"
    """Folder under ``data_dir`` (or absolute) for ``scans/<profile>/<UTC time>/``."""
    profiles: dict[str, Gates] = Field(default_factory=dict)
    """Gates per profile (``premove``'s gates are ``scans.premove``, not here)."""
    premove: PremoveConfig = PremoveConfig()

    def gates(self, profile: str) -> Gates:
        base = PROFILE_GATES.get(profile, Gates())
        override = self.profiles.get(profile)
        if override is None:
            return base
        return Gates.model_validate(
            base.model_dump() | override.model_dump(include=set(override.model_fields_set)))


__all__ = ["PROFILE_GATES", "REGIME_WEIGHTS", "SCAN_PROFILES", "STABLECOINS", "Gates",
           "PremoveConfig", "Profile", "RegimeConfig", "ScansConfig", "TopByVolume",
           "UniverseConfig", "Votes", "Weights"]
