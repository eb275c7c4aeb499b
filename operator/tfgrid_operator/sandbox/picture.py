"""A picture of the month as SVG, written by hand (no plotting dependency): minted and billed TFT so far,
and every account's balance, day by day."""

from __future__ import annotations

import dataclasses
import html

from tfgrid_operator.domain import money

W, H, PAD, GAP = 860, 300, 56, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22", "#393b79", "#637939")


def _tft(units: int) -> str:
    return f"{units / money.UNITS_PER_TFT:,.2f}"


@dataclasses.dataclass(frozen=True)
class Point:
    day: float
    minted: int
    billed: int
    balances: dict[str, int]


def _panel(top: int, title: str, days: float, series: dict[str, list[tuple[float, int]]]) -> list[str]:
    peak = max((v for pts in series.values() for _, v in pts), default=0) or 1
    x0, y0, w, h = PAD, top + 24, W - 2 * PAD - 150, H - 60

    def xy(day: float, v: int) -> str:
        return f"{x0 + w * day / (days or 1):.1f},{y0 + h - h * v / peak:.1f}"

    out = [f'<text x="{x0}" y="{top + 14}" font-size="14" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
           f'<text x="{x0 - 6}" y="{y0 + 4}" font-size="10" text-anchor="end">{_tft(peak)}</text>',
           f'<text x="{x0 - 6}" y="{y0 + h}" font-size="10" text-anchor="end">0</text>',
           f'<text x="{x0}" y="{y0 + h + 14}" font-size="10">day 0</text>',
           f'<text x="{x0 + w}" y="{y0 + h + 14}" font-size="10" text-anchor="end">day {days:g}</text>']
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(xy(d, v) for d, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        last = pts[-1][1] if pts else 0
        out.append(f'<text x="{x0 + w + 8}" y="{y0 + 12 + 14 * i}" font-size="11" fill="{colour}">'
                   f'{html.escape(name)} {_tft(last)}</text>')
    return out


def svg(points: list[Point], days: float) -> str:
    """Two panels: cumulative minted and billed TFT; every account's balance (TFT)."""
    flows = {"minted": [(p.day, p.minted) for p in points], "billed": [(p.day, p.billed) for p in points]}
    names = sorted({n for p in points for n in p.balances})
    balances = {n: [(p.day, p.balances.get(n, 0)) for p in points] for n in names}
    body = [*_panel(0, "Minted and billed so far (TFT)", days, flows),
            *_panel(H + GAP, "Account balances (TFT)", days, balances)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{2 * H + GAP}" '
            f'viewBox="0 0 {W} {2 * H + GAP}" font-family="sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
