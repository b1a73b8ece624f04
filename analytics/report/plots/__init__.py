"""Plotly figure builders: result in, ``go.Figure`` out. Pure; no Streamlit.

One module per topic (``survival``, ``trajectories``, ``benchmarks``, ``qi``, ``safety``); this package
holds what they share: a colour-blind-safe palette (Okabe–Ito) and the common layout.

Text from the data (group, program, site, clinician names; values quoted in notes) goes into a figure through
:func:`analytics.formatting.escape_plotly` (plotly reads HTML tags, entities and ``%{...}`` templates in every text it
draws); a builder escapes the value first, then adds its own ``<br>``/``<b>`` around it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from analytics.formatting import escape_plotly

# Okabe & Ito (2008) colour-blind-safe palette, black last.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FONT = "DejaVu Sans, Arial, sans-serif"
NOTE_GREY = "#6E6E6E"
TEMPLATE = "plotly_white"
# Figures start from our template as plotly's default (set once, here): naming it on each figure made plotly copy and
# re-validate the whole template every time (~20 ms a figure, a tenth of a second per page of charts).
pio.templates.default = TEMPLATE


def note_under_axis(fig: go.Figure, text: str) -> None:
    """Grey lines under the x-axis title (e.g. what the small-cell rule left out): an axis title sits below the tick
    labels however tall they are, and the report shows it too. ``text`` is plain text (it may name units from the
    data): it is escaped here."""
    lines = "<br>".join(escape_plotly(line) for line in textwrap.wrap(text, 110))
    title = fig.layout.xaxis.title.text or ""
    fig.update_xaxes(title_text=f"{title}<br><span style='font-size:11px;color:{NOTE_GREY}'>{lines}</span>")
    fig.update_layout(margin={"b": 90 + 14 * lines.count("<br>")})


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def base_layout(fig: go.Figure, *, title: str, x_title: str | None = None, y_title: str | None = None,
                height: int = 480) -> go.Figure:
    """Title, axis titles with units, readable fonts, legend on top; returns the same figure."""
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        font={"family": FONT, "size": 13},
        height=height,
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    if pio.templates.default != TEMPLATE:  # someone changed plotly's default since
        fig.update_layout(template=TEMPLATE)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def ci_error_y(estimate: Iterable[float], low: Iterable[float], high: Iterable[float]) -> dict[str, object]:
    """Plotly ``error_y`` of bars whose confidence interval is ``low``–``high`` (thin, dark grey; plain lists, so a
    hidden bar's NaN stays NaN): the interval bars of the safety, monitoring and retention charts."""
    est = np.asarray(estimate, dtype=float)
    return {"type": "data", "symmetric": False, "array": (np.asarray(high, dtype=float) - est).tolist(),
            "arrayminus": (est - np.asarray(low, dtype=float)).tolist(), "color": "#333333", "thickness": 1}
