"""The one table ``make bench`` prints: each figure against its baseline from the same run.

A :class:`Row` holds one figure per round for our side and for its baseline (plain ``openai``
to the same upstream, a bare TCP relay, dcap-qvl, fresh quotes, the offered load...), measured
in the same rounds so that load from elsewhere on the machine hits both alike. The table shows
the medians and the min/median/max of the per-round ratios ours/baseline, and, where the
project has a target for a ratio, whether the median meets it. Nothing here asserts anything:
a missed target is printed, never raised.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

_WIDTH: Final = 46


@dataclass(frozen=True)
class Target:
    """A bound on the median ratio: ``at_least`` (higher is better) or at most."""

    bound: float
    at_least: bool

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:g}"


def at_least(bound: float) -> Target:
    return Target(bound, at_least=True)


def at_most(bound: float) -> Target:
    return Target(bound, at_least=False)


@dataclass(frozen=True)
class Row:
    """One compared figure: ``ours`` and ``baseline`` hold one value per round, in ``unit``."""

    label: str
    unit: str  # "tok/s", "s", "/s", "chunks/s": how values print (seconds shown in us/ms)
    ours: tuple[float, ...]
    baseline: tuple[float, ...]
    baseline_name: str
    target: Target | None = None
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        return [o / b if b > 0 else math.inf for o, b in zip(self.ours, self.baseline, strict=True)]

    def line(self) -> str:
        ratios = self.ratios
        median = statistics.median(ratios)
        verdict = ""
        if self.target is not None:
            verdict = f"{self.target!s:>7} {'met' if self.target.met(median) else 'NOT MET'}"
        spread = f"{_ratio(min(ratios))} {_ratio(median)} {_ratio(max(ratios))}"
        line = (
            f"  {self.label:<{_WIDTH}} {_value(statistics.median(self.ours), self.unit):>10} "
            f"{_value(statistics.median(self.baseline), self.unit):>10} "
            f"{self.baseline_name:<14} {spread:>20}  {verdict}"
        )
        return f"{line.rstrip()}  {self.note}" if self.note else line.rstrip()


def _ratio(value: float) -> str:
    return f"{value:6.2f}" if math.isfinite(value) and abs(value) < 1000 else "   n/a"


def _value(value: float, unit: str) -> str:
    if unit == "s":
        if abs(value) < 0.01:
            return f"{value * 1e6:,.0f} us"
        return f"{value * 1e3:,.1f} ms" if abs(value) < 10 else f"{value:,.1f} s"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def render(title: str, sections: Sequence[tuple[str, Sequence[Row]]]) -> str:
    """The whole table as text: a header, then each section's rows under its title."""
    head = (
        f"  {'':<{_WIDTH}} {'ours':>10} {'baseline':>10} {'(which)':<14} "
        f"{'ours/baseline min med max':>20}  target"
    )
    lines = [title, head]
    for name, rows in sections:
        lines.append(f" {name}")
        lines.extend(row.line() for row in rows)
    return "\n".join(lines)
