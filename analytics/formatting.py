"""Numbers stay numbers until the edge: every text formatting of results lives here.

Used by pages, the report and CLI text output alike.
"""

from __future__ import annotations

import math
import re

SUPPRESSED = "<11"  # shown in place of a suppressed count (1–10 by default)
DASH = "–"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: float | None, digits: int = 2) -> str:
    return "—" if _missing(x) else f"{x:,.{digits}f}"


def count(n: int | None) -> str:
    return "—" if n is None else f"{int(n):,}"


def pct(x: float | None, digits: int = 0) -> str:
    """A proportion (0–1) as a percentage."""
    return "—" if _missing(x) else f"{100 * x:.{digits}f}%"


def ci(estimate: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
    """``0.62 (0.41–0.93)``."""
    if _missing(estimate):
        return "—"
    if _missing(low) or _missing(high):
        return num(estimate, digits)
    return f"{estimate:.{digits}f} ({low:.{digits}f}{DASH}{high:.{digits}f})"


def pct_ci(estimate: float | None, low: float | None, high: float | None, digits: int = 0) -> str:
    if _missing(estimate):
        return "—"
    if _missing(low) or _missing(high):
        return pct(estimate, digits)
    return f"{pct(estimate, digits)} ({pct(low, digits)}{DASH}{pct(high, digits)})"


def p_value(p: float | None) -> str:
    if _missing(p):
        return "—"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}"


# --------------------------------------------------------------------------------------------------------------
# Text from the data (file names, column headers, program/site/clinician names, values quoted in notes and error
# sentences) is shown literally: escaped for the renderer that shows it, at the edge, after every other formatting.
# --------------------------------------------------------------------------------------------------------------

# Characters Streamlit's Markdown (CommonMark + GFM + LaTeX + directives such as :red[...]) gives a meaning anywhere
# in a line: backslash escapes, code, emphasis, strikethrough, links and images, raw HTML and entities, headings,
# tables, LaTeX, e-mail autolinks. A backslash before an ASCII punctuation character shows that character as is.
_MD_ANYWHERE = re.compile(r"([\\`*_\[\]()<>#|~$!&@])")
# ... and what starts a block only at the start of a line: list items (- + * 1. 1)), setext underlines (= -)
_MD_LINE_START = re.compile(r"^([ \t]*)(?:([-+=])|(\d+)([.)]))", flags=re.MULTILINE)
# ... and the GFM autolink literals (https://..., www.example.org) that make a link without any markup
_MD_URL_SCHEME = re.compile(r"(?<=[A-Za-z0-9]):(?=//)")
_MD_WWW = re.compile(r"(?i)\b(www)\.")


def escape_markdown(text: object) -> str:
    """``text`` for ``st.markdown``/``st.caption``/``st.info``/``st.warning``/``st.write``: shown literally.

    Every character Streamlit's Markdown treats specially gets a backslash (``\\``, backtick, ``*``, ``_``, ``[``,
    ``]``, ``(``, ``)``, ``<``, ``>``, ``#``, ``|``, ``~``, ``$``, ``!``, ``&``, ``@``), as do a list or heading
    marker at the start of a line and the ``:`` of ``https://`` / ``.`` of ``www.`` (GFM makes links of them without
    markup). So ``![x](https://evil.example/p.png)`` shows as that text instead of fetching an image, ``**b**`` is not
    bold and ``$x$`` is not LaTeX. Use it on text that came from the data, or on a whole sentence that must not
    carry markup (the analytics' notes and error messages carry none).

    Examples
    --------
    >>> escape_markdown("**Harbor** <b>$5</b>")
    '\\\\*\\\\*Harbor\\\\*\\\\* \\\\<b\\\\>\\\\$5\\\\</b\\\\>'
    """
    s = _MD_ANYWHERE.sub(r"\\\1", str(text))
    s = _MD_LINE_START.sub(lambda m: m.group(1) + (f"\\{m.group(2)}" if m.group(2) else f"{m.group(3)}\\{m.group(4)}"),
                           s)
    s = _MD_URL_SCHEME.sub(r"\\:", s)
    return _MD_WWW.sub(r"\1\\.", s)


def escape_plotly(text: object) -> str:
    """``text`` for a plotly figure (trace name, category or tick label, hover card, annotation, title): literal.

    Plotly reads a subset of HTML in every text it draws (``<b>``, ``<i>``, ``<br>``, ``<a href=...>``,
    ``<span style=...>``, ``<sup>``; entities like ``&lt;``) and fills ``%{...}`` in hover and text templates.
    ``&``, ``<`` and ``>`` become entities and the ``{`` of ``%{`` becomes ``&#123;``, which plotly draws as the
    characters themselves. Escape a value first, then add the figure's own markup around it::

        f"<b>{escape_plotly(site)}</b><br>{escape_plotly(note)}"
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("%{", "%&#123;")
