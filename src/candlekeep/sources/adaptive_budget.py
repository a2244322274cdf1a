"""An effective rate budget that learns when the exchange enforces less than it advertises.

An exchange can quietly allow less than its documented budget: another program on the
same IP spends from it, an endpoint is stricter. Pacing to the advertised figure then
earns a 429 every window, and Binance bans (HTTP 418) an IP that keeps collecting them.
So when no budget is configured the limiter starts from the advertised one and adapts it
the way TCP adapts its congestion window (AIMD):

- a 429 while our books say we were within budget cuts the effective budget to
  ``decrease`` times the weight we had on the books when it came (not times the budget:
  far above the real wall a halved budget is still far above it), never below
  ``min_budget``. Every 429 for a request granted before that cut, or arriving before
  the pause it started is over, belongs to the same episode (requests already sent when
  the first 429 came) and counts as one cut;
- each window that passes without a 429 while the budget was what held requests back
  raises it by ``increase`` of the level where the 429 came (the "wall"), slowly, so the
  wall is approached over many windows; once past the wall, the step doubles every window
  (the wall has moved: another program stopped), up to the advertised budget, never past;
- weight the server reports beyond our books (someone else on the IP) holds the next
  raise back;
- above the highest use the server has accepted since the last cut (``confirmed``), the
  limiter lets at most ``probe`` of that level, and at most ``max_probes`` requests, be in
  flight (one request at least): when the unknown wall is met, only those few requests
  meet it, not a whole burst of concurrent pages, each of which would be a 429, and
  Binance bans an IP that keeps sending into its 429s.

Pure bookkeeping on millisecond timestamps: the WeightLimiter calls it under its own
lock with its clock's time.
"""

from __future__ import annotations

import math


class AdaptiveBudget:
    """The effective budget of one limiter in adaptive mode (see the module doc)."""

    def __init__(self, advertised: int, window_ms: int, *, decrease: float = 0.7,
                 increase: float = 0.05, probe: float = 0.05, max_probes: int = 2,
                 min_budget: int | None = None) -> None:
        if not (0 < decrease < 1 and 0 < increase <= 1 and 0 < probe <= 1):
            raise ValueError("decrease must be in (0, 1), increase and probe in (0, 1]")
        self.advertised = advertised
        self.window_ms = window_ms
        self.decrease = decrease
        self.increase = increase
        self.probe = probe
        self.max_probes = max(1, max_probes)
        self.min_budget = min_budget if min_budget is not None else max(1, advertised // 1000)
        self.effective = advertised
        self.wall: int | None = None
        """Weight on the books when the last cut's 429 came."""
        self.confirmed = 0
        """The most answered weight on the books at a success since the last cut."""
        self.cuts = 0
        self._step = 1
        self._episode_start_ms = 0
        self._episode_until_ms = 0
        self._last_raise_ms: int | None = None
        self.limited = False
        """The budget held a request back since the last raise."""
        self.contended = False
        """The server reported weight beyond our books since the last raise."""

    def cut(self, now_ms: int, level: int, pause_until_ms: int,
            granted_ms: int | None = None) -> bool:
        """A 429 arrived with ``level`` weight on our books, for a request granted at
        ``granted_ms`` (when known); True when it starts a new episode (and so cut the
        budget), False when it belongs to the current one."""
        if now_ms < self._episode_until_ms or (
                granted_ms is not None and granted_ms <= self._episode_start_ms):
            self._episode_until_ms = max(self._episode_until_ms, pause_until_ms)
            return False
        wall = max(self.min_budget, min(self.effective, level))
        self.wall = wall
        self.effective = max(self.min_budget, math.floor(self.decrease * wall))
        self._step = max(1, round(self.increase * wall))
        self.confirmed = self.effective
        self.cuts += 1
        self._episode_start_ms = now_ms
        self._episode_until_ms = pause_until_ms
        self._last_raise_ms = pause_until_ms
        self.limited = self.contended = False
        return True

    def succeeded(self, answered_weight: int) -> None:
        """A reply came back fine with ``answered_weight`` answered weight on the books."""
        self.confirmed = max(self.confirmed, answered_weight)

    def probe_room(self, weight: int) -> int:
        """Weight allowed in flight, requests of ``weight`` each, while the books are above
        ``confirmed``."""
        return min(math.floor(self.probe * self.confirmed), self.max_probes * weight)

    def maybe_raise(self, now_ms: int) -> None:
        """Raise the budget once per window without a 429 in which it held requests
        back (and no one else spent from it)."""
        if self._last_raise_ms is None:
            self._last_raise_ms = now_ms
        if now_ms - self._last_raise_ms < self.window_ms:
            return
        if self.effective < self.advertised and self.limited and not self.contended:
            self.effective = min(self.advertised, self.effective + self._step)
            if self.wall is not None and self.effective > self.wall:
                self._step *= 2
        self._last_raise_ms = now_ms
        self.limited = self.contended = False


__all__ = ["AdaptiveBudget"]
