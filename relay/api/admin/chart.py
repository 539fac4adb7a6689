"""The dashboard's per-minute chart as SVG coordinates (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Chart", "chart", "series"]

WIDTH = 600
HEIGHT = 120


def series(counts: Mapping[int, int], last_minute: int, minutes: int = 60) -> list[int]:
    """One count per minute, oldest first, ending with ``last_minute`` (missing: 0)."""
    return [counts.get(m, 0) for m in range(last_minute - minutes + 1, last_minute + 1)]


@dataclass(frozen=True, slots=True)
class Chart:
    """Polylines (``points`` attributes) for each series, on one scale up to ``peak``."""

    width: int
    height: int
    peak: int
    lines: dict[str, str]
    totals: dict[str, int]


def _points(values: Sequence[int], peak: int, width: int, height: int) -> str:
    if len(values) < 2:
        return ""
    step = width / (len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - (v / peak) * height:.1f}" for i, v in enumerate(values)
    )


def chart(named: Mapping[str, Sequence[int]], width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """One chart for several series of the same length."""
    peak = max([1, *(max(v, default=0) for v in named.values())])
    return Chart(
        width=width,
        height=height,
        peak=peak,
        lines={name: _points(values, peak, width, height) for name, values in named.items()},
        totals={name: sum(values) for name, values in named.items()},
    )
