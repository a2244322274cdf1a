"""An effective rate budget that learns when the exchange enforces less than it advertises.

An exchange can quietly allow less than its documented budget: another program on the
same IP spends from it, an endpoint is stricter. Pacing to the advertised figure then
earns a 429 every window, and Binance bans (HTTP 418) an IP that keeps collecting them.
So when no budget is configured the limiter starts from the advertised one and adapts it
the way TCP adapts its congestion window (AIMD):

- a 429 (or a 418) while our books say we were within budget cuts the effective budget to
  ``decrease`` times the weight we had on the books when it came (not times the budget:
  far above the real wall a halved budget is still far above it), never below
  ``min_budget``. Every 429 for a request granted before that cut, or arriving before
  the pause it started is over, belongs to the same episode (requests already sent when
  the first 429 came) and counts as one cut; a 418 always starts its own episode;
- the cut remembers the ``wall`` (that weight) and ``hold``, the highest level the server
  accepted below it. Each window without a 429 in which the budget held requests back
  (and no one else spent from it) raises the budget by ``increase`` of the wall, up to
  ``hold``; there it stays. Only after a quiet period of 4 windows, then 8, 16, ... (the
  period doubles each time a cut lands near the same wall again) does it probe one step
  above: a 429 brings it straight back to ``hold`` (the server accepted that), a window
  used at that level without one means the wall moved, and the step then doubles every
  window (another program stopped), up to the advertised budget, never past. So a fixed
  wall costs a 429 a few times an hour, not one every few windows;
- weight the server reports beyond our books (someone else on the IP) holds the next
  raise back;
- above the highest use the server has accepted (``confirmed``), at most ``probes``
  requests may be in flight (one request at least), and once a wall was met at most
  ``probe`` of that level too: when a wall is met, only those few requests meet it, not a
  whole burst of concurrent pages, each of which would be a 429 (Binance bans an IP that
  keeps sending into its 429s). Like TCP's slow start, ``probes`` starts at
  ``max_probes`` and doubles each window in which the probes were accepted, up to
  ``max_probes * 8``, while no wall holds the budget: with no wall the adaptive limiter
  reaches the fixed one's pace within a few windows, also where a window holds only a few
  round trips (a share of a small accepted level would round down to one request and
  never grow). After a cut, one probe at a time.

Pure bookkeeping on millisecond timestamps: the WeightLimiter calls it under its own
lock with its clock's time.
"""

from __future__ import annotations

import math


class AdaptiveBudget:
    """The effective budget of one limiter in adaptive mode (see the module doc)."""

    def __init__(self, advertised: int, window_ms: int, *, decrease: float = 0.7,
                 increase: float = 0.05, probe: float = 0.05, max_probes: int = 2,
                 near: float = 0.15, min_budget: int | None = None) -> None:
        if not (0 < decrease < 1 and 0 < increase <= 1 and 0 < probe <= 1 and 0 <= near < 1):
            raise ValueError("decrease and near must be in (0, 1), increase and probe in (0, 1]")
        self.advertised = advertised
        self.window_ms = window_ms
        self.decrease = decrease
        self.increase = increase
        self.probe = probe
        self.max_probes = max(1, max_probes)
        self.near = near
        self.min_budget = min_budget if min_budget is not None else max(1, advertised // 1000)
        self.effective = advertised
        self.wall: int | None = None
        """Weight on the books when the last cut's 429 came (or what the server reported)."""
        self.hold: int | None = None
        """The highest level the server accepted below the wall; None once it moved."""
        self.meets = 0
        """Cuts in a row that landed near the same wall."""
        self.confirmed = 0
        """The most answered weight on the books at a success since the last cut."""
        self.probes = self.max_probes
        """Requests allowed in flight above ``confirmed``."""
        self.cuts = 0
        self._step = 1
        self._quiet = 0
        self._confirmed_at_raise = 0
        self._episode_start_ms = 0
        self._episode_until_ms = 0
        self._episode_ban = False
        self._last_raise_ms: int | None = None
        self.limited = False
        """The budget held a request back since the last raise."""
        self.contended = False
        """The server reported weight beyond our books since the last raise."""

    def cut(self, now_ms: int, level: int, pause_until_ms: int,
            granted_ms: int | None = None, *, banned: bool = False) -> bool:
        """A 429 (``banned``: a 418) arrived with ``level`` weight on our books, for a
        request granted at ``granted_ms`` (when known); True when it starts a new episode
        (and so cut the budget), False when it belongs to the current one."""
        in_episode = now_ms < self._episode_until_ms or (
            granted_ms is not None and granted_ms <= self._episode_start_ms)
        if in_episode and (not banned or self._episode_ban):
            self._episode_until_ms = max(self._episode_until_ms, pause_until_ms)
            return False
        wall = max(self.min_budget, min(self.effective, level))
        near = self.wall is not None and abs(wall - self.wall) <= self.near * self.wall
        self.meets = self.meets + 1 if near else 1
        floor = max(self.min_budget, math.floor(self.decrease * wall))
        accepted = max(self.confirmed, self.hold or 0) if near else self.confirmed
        if near and self.hold is not None and self.effective <= self.hold:
            accepted = self.hold - self._step  # met at the hold level itself: too high
        if accepted <= floor:  # no evidence below the wall: up to it, slowly
            accepted = wall - 1
        self.hold = max(floor, min(accepted, wall - 1))
        self.effective = self.hold if near and not banned else floor
        self.wall = wall
        self._step = max(1, round(self.increase * wall))
        self.confirmed = self._confirmed_at_raise = self.effective
        self.probes = 1
        self._quiet = 0
        self.cuts += 1
        self._episode_start_ms = now_ms
        self._episode_until_ms = pause_until_ms
        self._episode_ban = banned
        self._last_raise_ms = pause_until_ms
        self.limited = self.contended = False
        return True

    def succeeded(self, answered_weight: int) -> None:
        """A reply came back fine with ``answered_weight`` answered weight on the books."""
        self.confirmed = max(self.confirmed, answered_weight)

    def probe_room(self, weight: int) -> int:
        """Weight allowed in flight above ``confirmed``, requests of ``weight`` each. Before
        any wall was met, only the slow start's count bounds it: where a window holds few
        round trips (short windows, slow replies), a share of the accepted level would
        round down to one request and never grow."""
        if self.wall is None:
            return self.probes * weight
        return min(math.floor(self.probe * self.confirmed), self.probes * weight)

    def maybe_raise(self, now_ms: int) -> None:
        """Once per window: grow the probes while no wall is known, and raise the budget
        after a window without a 429 in which it held requests back (and no one else
        spent from it)."""
        if self._last_raise_ms is None:
            self._last_raise_ms = now_ms
        if now_ms - self._last_raise_ms < self.window_ms:
            return
        rose = self.confirmed > self._confirmed_at_raise
        if self.hold is None and rose:
            self.probes = min(2 * self.probes, 8 * self.max_probes)
        if self.hold is not None and self.effective > self.hold and self.limited:
            self.hold = None  # a window of use above the wall without a 429: it moved
        if self.effective < self.advertised and self.limited and not self.contended:
            self._raise()
        self._last_raise_ms = now_ms
        self._confirmed_at_raise = self.confirmed
        self.limited = self.contended = False

    def _raise(self) -> None:
        if self.hold is None:  # no wall, or past it: the step doubles once beyond it
            self.effective = min(self.advertised, self.effective + self._step)
            if self.wall is not None and self.effective > self.wall:
                self._step *= 2
                if self.effective > (1 + self.near) * self.wall:
                    self.meets = 0  # well past it: a cut there is a new wall
        elif self.effective < self.hold:
            self.effective = min(self.hold, self.effective + self._step)
        else:
            self._quiet += 1
            if self._quiet >= 2 ** (self.meets + 1):  # a quiet period at the wall: probe
                self.effective = min(self.advertised, self.hold + self._step)
                self._quiet = 0


__all__ = ["AdaptiveBudget"]
