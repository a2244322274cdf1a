"""Charts for report sections, drawn as PNG for inline images (mail clients run no
scripts and fetch no remote images, so a chart must travel inside the message).

matplotlib is imported when a chart is drawn (it costs most of a second), and through its
object API with the Agg canvas: no pyplot, no global figure state shared between threads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH_IN = 7.5
DPI = 100
MAX_BARS = 30
"""More bars than this are unreadable in a mail: the caller passes the most telling ones."""


@dataclass(frozen=True, slots=True)
class Chart:
    png: bytes
    alt: str
    width_px: int


@dataclass(frozen=True, slots=True)
class Stack:
    """One colour of a stacked bar chart: its legend label and one value per bar."""

    label: str
    color: str
    values: Sequence[float]


def stacked_bars(title: str, labels: Sequence[str], stacks: Sequence[Stack],
                 alt: str) -> Chart:
    """Horizontal stacked bars, one per label (top to bottom in the given order)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = list(labels)[:MAX_BARS]
    n = len(labels)
    # Labels are job names and symbols: a ``$`` in one must not start TeX-like math.
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = Figure(figsize=(WIDTH_IN, 1.3 + 0.32 * n), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ypos = list(range(n))
        left = [0.0] * n
        for s in stacks:
            values = [float(v) for v in list(s.values)[:n]]
            ax.barh(ypos, values, left=left, color=s.color, label=s.label, height=0.7)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_yticks(ypos, labels=labels, fontsize=9)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=11, loc="left", pad=22)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(axis="x", labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.grid(axis="x", color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
                  ncols=len(stacks), borderaxespad=0.2, handlelength=1.2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return Chart(buf.getvalue(), alt, int(WIDTH_IN * DPI))
