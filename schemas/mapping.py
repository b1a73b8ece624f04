"""The column-mapping step: suggest which header means which canonical column, save it, preview it.

When an export's headers match no preset, the user maps each field to one of the file's columns. This
module holds the logic the Data page and the CLI share:

* :func:`suggest_mapping` / :func:`mapping_suggestions` score every header against every field by name
  similarity (spellings in ``schemas/presets/_synonyms.toml``). A field with two equally good headers, or a
  header that is equally the best for two fields, is **flagged as ambiguous and never chosen**. Headers
  that look like direct identifiers (MRN, name, e-mail, …) are never suggested.
* :class:`Mapping` is the user's choice for one export; it saves as a small TOML file in the preset format
  (``kap-outcomes … --mapping FILE`` and :func:`schemas.presets.load_mapping_file` read it). A mapping never
  silently drops a column's data: columns left unmapped stay in the file as extra columns (shown, never
  analysed), and a column that looks like a direct identifier is kept only when mapped explicitly (listed
  in ``keep_identifiers``).
* :func:`preview` shows the first rows as the data contract sees them: canonical names, parsed values and
  the issues those rows would get.
* :func:`to_preset_layout` writes canonical exports in a preset's layout (sample files, round-trip tests).

Notes
-----
Similarity of a header and a spelling (both lower-cased, camelCase split, punctuation → ``_``): 1.0 when
equal, also without separators (``PHQ-9``/``phq9``) or after dropping filler words (``total``, ``score``,
``number``, …); otherwise 0.9 × the larger of difflib's ``SequenceMatcher`` ratio and the token Jaccard index
of the remaining words. :func:`field_score` grades exact matches (canonical name 1.0, listed spelling 0.95,
generic spelling 0.8) and checks date words. A suggestion needs at least 0.6; scores closer than 0.02 tie.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tomllib
from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from schemas.columns import COLUMNS, REQUIRED, read_columns
from schemas.errors import UnusableExport
from schemas.headers import looks_like_identifier, normalise_header
from schemas.presets import EXTRA, PRESET_DIR, Preset, dumps_toml, load_preset, norm_code
from schemas.reader import read_export, read_table

THRESHOLD = 0.6
MARGIN = 0.02
_FILLER = frozenset({"total", "score", "the", "of", "number", "no", "nr", "num", "code", "id"})
_DATE_WORDS = frozenset({"date", "dt", "datetime", "time", "timestamp", "day", "on", "when", "start", "end", "period"})
# conservative suggestions: words that rule a header out of a field, whatever its similarity
_POUNDS = frozenset({"lb", "lbs", "pound", "pounds"})
_NOT_EVENT_DATE = frozenset({"due", "assigned", "scheduled", "sent", "created", "requested", "expires", "expiry",
                             "expiration", "next", "planned", "booked", "reminder"})
_NOT_PATIENT = frozenset({"loinc", "instrument", "questionnaire", "measure", "scale", "observation", "encounter",
                          "appointment", "visit", "episode", "order", "provider", "practitioner", "location"})
_NOT_TREATMENT_STATUS = frozenset({"complete", "completed", "completion", "questionnaire", "survey", "form",
                                   "observation", "response", "record", "appointment", "visit", "order"})
_RECORD_STATUSES = frozenset({"completed", "complete", "final", "amended", "corrected", "preliminary", "in_progress",
                              "entered_in_error", "incomplete", "unverified", "registered", "cancelled", "0", "1",
                              "2"})
_OBSERVATION_STATUS_VALUES = frozenset({"final", "amended", "corrected", "preliminary", "entered_in_error",
                                        "registered", "cancelled"})
POUNDS_TO_KG = 0.45359237


def _tokens(header: str) -> set[str]:
    return set(_norm(header).split("_"))


def ruled_out(header: str, kind: str, column: str, values: Sequence[str] | None = None) -> str | None:
    """Why ``header`` is never suggested for ``column`` (a sentence), or None.

    Pounds are never kilograms, a period's start or end and a questionnaire's code are never the patient, an
    assigned or due date is never a return to use or an assessment, and a questionnaire's or record's "Completed"
    is never a treatment status (nor is a column whose values are only record statuses such as final/amended).
    """
    tokens = _tokens(header)
    if column == "weight_kg" and tokens & _POUNDS:
        return f"'{header}' is in pounds, not kg: convert it (x {POUNDS_TO_KG}) instead"
    if column == "craving" and "100" in tokens:
        return f"'{header}' is on a 0-100 scale, not 0-10: rescale it (x 0.1) instead"
    if column == "patient_id" and (tokens & (_NOT_PATIENT | _DATE_WORDS)):
        return f"'{header}' names a date, code or other record, not the patient"
    if column in ("relapse_date", "assessment_date") and tokens & _NOT_EVENT_DATE:
        return f"'{header}' is a planned or assigned date, not the day it happened"
    if kind == "followups" and column == "status":
        if tokens & _NOT_TREATMENT_STATUS:
            return f"'{header}' is the status of a form or record, not of the treatment"
        seen = {re.sub(r"[\s\-]+", "_", str(v).strip().lower()) for v in (values or ()) if str(v).strip()}
        if seen and seen <= _RECORD_STATUSES:
            return f"the values of '{header}' are record statuses ({', '.join(sorted(seen)[:4])}), not treatment ones"
    if kind == "followups" and column == "observation_status":
        seen = {re.sub(r"[\s\-]+", "_", str(v).strip().lower()) for v in (values or ()) if str(v).strip()}
        if not seen or not seen <= (_OBSERVATION_STATUS_VALUES | {"final"}):
            return f"'{header}' does not hold observation statuses (final, amended, entered in error)"
    return None


_ITEM_RE = {"phq9": re.compile(r"^phq_?9_?(?:items?_?|q_?|question_?|i_?)?([1-9])$"),
            "gad7": re.compile(r"^gad_?7_?(?:items?_?|q_?|question_?|i_?)?([1-7])$")}


def detect_items(headers: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """PHQ-9 items 1-9 / GAD-7 items 1-7 written as columns (``phq9_q1``, ``PHQ-9 Item 3``, ``gad7_7``): instrument →
    its item headers in order, when every item of the instrument has exactly one column."""
    from schemas.presets import ITEM_COUNTS

    found: dict[str, dict[int, list[str]]] = {m: {} for m in _ITEM_RE}
    for h in headers:
        for measure, pattern in _ITEM_RE.items():
            if hit := pattern.match(_norm(h)):
                found[measure].setdefault(int(hit.group(1)), []).append(h)
    return {m: tuple(items[i][0] for i in range(1, ITEM_COUNTS[m] + 1)) for m, items in found.items()
            if set(items) == set(range(1, ITEM_COUNTS[m] + 1)) and all(len(v) == 1 for v in items.values())}


def conversion(header: str, column: str) -> tuple[float, str] | None:
    """A unit conversion a header asks for: (factor, sentence), e.g. pounds to weight_kg."""
    tokens = _tokens(header)
    if column == "weight_kg" and tokens & _POUNDS and tokens & {"weight", "wt"}:
        return POUNDS_TO_KG, f"'{header}' is in pounds: read it as weight_kg (x {POUNDS_TO_KG} kg per lb)"
    if column == "craving" and "100" in tokens and "craving" in tokens:
        return 0.1, f"'{header}' is a 0-100 scale: read it as craving 0-10 (x 0.1)"
    return None
Layout = Literal["wide", "long"]
MAPPING_HEADER = ("KAP Outcomes column mapping (same format as schemas/presets/*.toml).\n"
                  "Use it with: kap-outcomes validate --sessions S.csv --followups F.csv --mapping THIS.toml\n"
                  "Lines are: \"header in your export\" = \"canonical column\"; \"extra\" keeps a column for "
                  "display only.")


# ------------------------------------------------------------------------------------------------------------
# fields and synonyms
# ------------------------------------------------------------------------------------------------------------

def fields_of(kind: str) -> tuple[str, ...]:
    """Canonical columns a file of this kind may map (required first, in contract order)."""
    if kind not in COLUMNS:
        raise UnusableExport(f"Unknown export kind '{kind}'; use sessions, followups or patients.")
    cols = list(read_columns(kind))
    return tuple([c for c in cols if c in REQUIRED[kind]] + [c for c in cols if c not in REQUIRED[kind]])


def field_description(kind: str, column: str) -> str:
    """The pandera field description (written for clinic staff)."""
    from schemas.long_format import _description

    desc = _description(kind, column)
    if not desc and kind == "sessions":
        desc = _description("patients", column)
    return desc


@lru_cache(maxsize=1)
def _synonyms() -> dict[str, Any]:
    return tomllib.loads((PRESET_DIR / "_synonyms.toml").read_text(encoding="utf-8"))


def _spellings(kind: str, column: str) -> tuple[str, ...]:
    listed = _synonyms().get("fields", {}).get(kind, {}).get(column, [])
    return (column, *listed)


def _norm(text: str) -> str:
    return normalise_header(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(text)))


def _core(tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in _FILLER] or tokens


def similarity(header: str, spelling: str) -> float:
    """Name similarity in [0, 1] of a header and one spelling (see the module notes)."""
    a, b = _norm(header), _norm(spelling)
    if not a or not b:
        return 0.0
    ta, tb = _core(a.split("_")), _core(b.split("_"))
    if a == b or a.replace("_", "") == b.replace("_", "") or "".join(ta) == "".join(tb) or set(ta) == set(tb):
        return 1.0
    ratio = SequenceMatcher(None, "".join(ta), "".join(tb)).ratio()
    jaccard = len(set(ta) & set(tb)) / len(set(ta) | set(tb))
    return round(0.9 * max(ratio, jaccard), 4)


def field_score(header: str, kind: str, column: str) -> float:
    """How well a header fits a field: the best similarity over the field's spellings, graded.

    An exact match of the canonical name scores 1.0, of a listed spelling 0.95 (0.8 for a generic spelling
    listed under ``[weak]``, such as ``date``); a header with a date word fits a non-date field at half its
    similarity, and a header without one fits a date field at 0.8 of it.
    """
    weak = set(_synonyms().get("weak", {}).get("spellings", []))
    best = 0.0
    for i, spelling in enumerate(_spellings(kind, column)):
        s = similarity(header, spelling)
        if s == 1.0:
            s = 1.0 if i == 0 else (0.8 if spelling in weak else 0.95)
        best = max(best, s)
    if best < 0.95:
        has_date_word = bool(_DATE_WORDS & set(_norm(header).split("_")))
        is_date = read_columns(kind).get(column) == "date"
        if has_date_word and not is_date:
            best *= 0.5
        elif is_date and not has_date_word:
            best *= 0.8
    return round(best, 4)


# ------------------------------------------------------------------------------------------------------------
# suggestions
# ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ambiguity:
    """Headers that fit fields equally well: never chosen, the user decides."""

    fields: tuple[str, ...]
    headers: tuple[str, ...]
    score: float
    message: str


@dataclass(frozen=True)
class MappingSuggestions:
    """Suggested header per field, with what could not be decided.

    ``table`` columns: ``field``, ``required`` (bool), ``header`` (suggested, or missing), ``score``,
    ``status`` (``suggested``, ``ambiguous``, ``none``), ``candidates`` (other headers above the threshold,
    best first). For a long file (``layout == "long"``), ``code_column`` and ``value_columns`` name the code
    and value headers and ``codes`` maps each code found in the file to ``(field or None, score)``.
    """

    kind: str
    layout: Layout
    chosen: dict[str, tuple[str, float]]
    ambiguous: tuple[Ambiguity, ...]
    table: pd.DataFrame
    identifiers: tuple[str, ...] = ()
    code_column: str | None = None
    value_columns: tuple[str, ...] = ()
    codes: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    conversions: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    items: dict[str, tuple[str, ...]] = field(default_factory=dict)


def detect_long(headers: Sequence[str], kind: str = "followups") -> tuple[str | None, tuple[str, ...]]:
    """The code column and value columns of a long file (one row per questionnaire), if the headers have them."""
    if kind != "followups":
        return None, ()
    spec = _synonyms().get("long", {})
    code_scores = [(max(similarity(h, s) for s in spec.get("code", ["code"])), h) for h in headers]
    best = max(code_scores, default=(0.0, None))
    values = tuple(h for h in headers if h != best[1]
                   and max(similarity(h, s) for s in spec.get("value", ["value"])) >= 0.85)
    if best[0] >= 0.85 and values:
        return best[1], values
    return None, ()


def suggest_codes(codes: Sequence[str], kind: str = "followups") -> dict[str, tuple[str | None, float]]:
    """Each instrument code → (canonical measure or None, score): known codes first, then name similarity."""
    from schemas.presets import ITEM_CODES

    known = {norm_code(k): v for k, v in _synonyms().get("codes", {}).items()}
    known.update({norm_code(k): v for k, v in ITEM_CODES.items()})
    measures = [c for c in fields_of(kind) if c not in ("patient_id", "assessment_date")]
    out: dict[str, tuple[str | None, float]] = {}
    for code in codes:
        if norm_code(code) in known:
            out[code] = (known[norm_code(code)], 1.0)
            continue
        item = next(((m, hit.group(1)) for m, pattern in _ITEM_RE.items() if (hit := pattern.match(_norm(code)))),
                    None)
        if item is not None:  # PHQ-9 item 3 written as a code: summed into the total
            out[code] = (f"{item[0]}_item{item[1]}", 1.0)
            continue
        scored = sorted(((field_score(code, kind, m), m) for m in measures), reverse=True)
        top = scored[0] if scored else (0.0, None)
        tie = len(scored) > 1 and top[0] - scored[1][0] < MARGIN
        out[code] = (top[1], top[0]) if top[0] >= THRESHOLD and not tie else (None, top[0])
    return out


def mapping_suggestions(headers: Sequence[str], kind: str, *, codes_in_file: Sequence[str] = (),
                        base: Preset | str | None = None, layout: Layout | None = None,
                        threshold: float = THRESHOLD, margin: float = MARGIN,
                        samples: AbcMapping[str, Sequence[str]] | None = None) -> MappingSuggestions:
    """Suggest a header for each field of ``kind``; flag ambiguities instead of choosing.

    Parameters
    ----------
    headers:
        The file's headers as written.
    codes_in_file:
        Distinct instrument codes of a long file (to suggest their measures).
    base:
        A preset whose column names count as exact matches (score 1.0), e.g. the preset the user picked.
    layout:
        ``wide`` or ``long``; detected from the headers when not given (long needs a code and a value column).
    samples:
        Distinct values of some headers (used to rule out a record status as a treatment status).

    Notes
    -----
    Suggestions are conservative (:func:`ruled_out`): such a header is never chosen, whatever its similarity;
    a unit conversion it asks for (pounds → kg, 0-100 → 0-10) is offered in ``conversions`` instead.

    Returns
    -------
    MappingSuggestions
    """
    fields = fields_of(kind)
    headers = list(dict.fromkeys(h.strip() for h in headers if h and h.strip()))
    base_preset = base if isinstance(base, Preset) else (load_preset(base) if base else None)
    code_col, value_cols = detect_long(headers, kind)
    if base_preset is not None and base_preset.long_layout(kind) is not None:
        spec = base_preset.long_layout(kind)
        assert spec is not None
        by_norm = {normalise_header(h): h for h in headers}
        if spec.code in by_norm and any(v in by_norm for v in spec.value):
            code_col = by_norm[spec.code]
            value_cols = tuple(by_norm[v] for v in spec.value if v in by_norm)
    chosen_layout: Layout = layout or ("long" if code_col else "wide")
    if chosen_layout == "long" and not code_col:
        code_col, value_cols = None, ()
    special = {code_col, *value_cols} if chosen_layout == "long" else set()
    detected_code = detect_long(headers, kind)[0]
    items = detect_items(headers) if chosen_layout == "wide" else {}
    special |= {h for hs in items.values() for h in hs}  # items are summed into totals, never a field themselves
    identifiers = tuple(h for h in headers if looks_like_identifier(h))
    base_map = base_preset.column_map(kind) if base_preset is not None else {}
    candidates: dict[str, list[tuple[float, str]]] = {}
    conversions: dict[str, tuple[str, float, str]] = {}
    samples = samples or {}
    for f in fields:
        if chosen_layout == "long" and kind == "followups" and f not in ("patient_id", "assessment_date"):
            candidates[f] = []  # measures come from codes; other columns of a long file stay extra
            continue
        scored = []
        for h in headers:
            if h in special or h in identifiers or (f == "patient_id" and h == detected_code):
                continue
            s = 1.0 if base_map.get(normalise_header(h)) == f else field_score(h, kind, f)
            if base_map.get(normalise_header(h)) != f and ruled_out(h, kind, f, samples.get(h)):
                if (conv := conversion(h, f)) is not None and f not in conversions:
                    conversions[f] = (h, *conv)
                continue
            if s >= threshold:
                scored.append((s, h))
        candidates[f] = sorted(scored, key=lambda x: (-x[0], headers.index(x[1])))
    chosen, ambiguous, status = _resolve(candidates, fields, margin)
    rows = []
    for f in fields:
        header, score = chosen.get(f, (None, max((s for s, _ in candidates[f]), default=0.0)))
        rows.append({"field": f, "required": f in REQUIRED[kind], "header": header, "score": round(score, 3),
                     "status": status.get(f, "suggested" if f in chosen else "none"),
                     "candidates": ", ".join(h for _, h in candidates[f] if h != header)})
    codes = suggest_codes(list(dict.fromkeys(codes_in_file)), kind) if chosen_layout == "long" else {}
    if base_preset is not None and base_preset.long_layout(kind) is not None and codes:
        known = base_preset.long_layout(kind).codes  # type: ignore[union-attr]
        codes = {c: ((known[norm_code(c)], 1.0) if norm_code(c) in known else v) for c, v in codes.items()}
    notes = []
    if identifiers:
        notes.append("Looks like a direct identifier, so never suggested and dropped unless you map it on purpose: "
                     + ", ".join(identifiers) + ".")
    for a in ambiguous:
        notes.append(a.message)
    return MappingSuggestions(kind=kind, layout=chosen_layout, chosen=chosen, ambiguous=tuple(ambiguous),
                              table=pd.DataFrame(rows), identifiers=identifiers,
                              code_column=code_col if chosen_layout == "long" else None,
                              value_columns=tuple(value_cols) if chosen_layout == "long" else (),
                              codes=codes, notes=tuple(notes), conversions=conversions, items=items)


def _resolve(candidates: dict[str, list[tuple[float, str]]], fields: Sequence[str],
             margin: float) -> tuple[dict[str, tuple[str, float]], list[Ambiguity], dict[str, str]]:
    """Pick one header per field; ties (two headers for one field, one header for two fields) stay open."""
    ambiguous: list[Ambiguity] = []
    status: dict[str, str] = {}
    best: dict[str, tuple[float, str]] = {}
    for f in fields:
        c = candidates[f]
        if not c:
            continue
        tied = [h for s, h in c if c[0][0] - s < margin]
        if len(tied) > 1:
            ambiguous.append(Ambiguity(
                fields=(f,), headers=tuple(tied), score=c[0][0],
                message=f"{f}: {_quote_list(tied)} fit equally well; choose the right one."))
            status[f] = "ambiguous"
            continue
        best[f] = c[0]
    used: set[str] = set()
    chosen: dict[str, tuple[str, float]] = {}
    by_header: dict[str, list[str]] = {}
    for f, (_, h) in best.items():
        by_header.setdefault(h, []).append(f)
    losers: list[str] = []
    for h, fs in by_header.items():
        if len(fs) == 1:
            chosen[fs[0]] = (h, best[fs[0]][0])
            used.add(h)
            continue
        fs = sorted(fs, key=lambda f: -best[f][0])
        top = best[fs[0]][0]
        tied = [f for f in fs if top - best[f][0] < margin]
        if len(tied) > 1:
            ambiguous.append(Ambiguity(
                fields=tuple(tied), headers=(h,), score=top,
                message=f"'{h}' fits {_quote_list(tied, quote=False)} equally well; choose which field it is."))
            for f in tied:
                status[f] = "ambiguous"
            used.add(h)
            losers.extend(f for f in fs if f not in tied)
        else:
            chosen[fs[0]] = (h, top)
            used.add(h)
            losers.extend(fs[1:])
    for f in losers:  # next-best header that nobody else wants
        taken = used | {h for h, _ in chosen.values()}
        rest = [(s, h) for s, h in candidates[f] if h not in taken]
        if rest and not (len(rest) > 1 and rest[0][0] - rest[1][0] < margin):
            chosen[f] = (rest[0][1], rest[0][0])
            used.add(rest[0][1])
    return chosen, ambiguous, status


def _quote_list(items: Sequence[str], quote: bool = True) -> str:
    q = [f"'{x}'" if quote else x for x in items]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " and " + q[-1]


def suggest_mapping(headers: Sequence[str], kind: str) -> dict[str, tuple[str, float]]:
    """Canonical field → (header, score) for the fields with one clearly best header.

    Ambiguous fields are left out (see :func:`mapping_suggestions` for the flags and the reasons).
    """
    return mapping_suggestions(headers, kind).chosen


# ------------------------------------------------------------------------------------------------------------
# the saved mapping
# ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mapping:
    """A user's column mapping for one export, saved as TOML in the preset format.

    ``columns``: header as written → canonical field (or ``"extra"``). ``keep_identifiers``: headers that
    look like direct identifiers and are mapped on purpose. For a long file: ``code_column``,
    ``value_columns`` and ``codes`` (code as written → measure). ``values``: value maps carried over from a
    preset (canonical column → {export value: canonical value or table}).
    """

    kind: str
    columns: dict[str, str]
    keep_identifiers: tuple[str, ...] = ()
    code_column: str | None = None
    value_columns: tuple[str, ...] = ()
    codes: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str = "clinic-mapping"
    description: str = ""
    strip_prefix: tuple[str, ...] = ()
    window_days: int | None = None
    scale: dict[str, float] = field(default_factory=dict)
    dates: str | None = None
    items: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_choices(cls, kind: str, choices: AbcMapping[str, str | None], headers: Sequence[str], *,
                     keep_identifiers: Sequence[str] = (), code_column: str | None = None,
                     value_columns: Sequence[str] = (), codes: AbcMapping[str, str | None] | None = None,
                     values: AbcMapping[str, dict[str, Any]] | None = None, name: str = "clinic-mapping",
                     description: str = "", window_days: int | None = None,
                     scale: AbcMapping[str, float] | None = None, dates: str | None = None,
                     strip_prefix: Sequence[str] = (),
                     items: AbcMapping[str, Sequence[str]] | None = None) -> Mapping:
        """Build and check a mapping from the user's choices (field → header, or None for "not in this file").

        Every header of the file not chosen for a field keeps its data as an extra column; one whose name
        would otherwise be read as a canonical column is written as ``"extra"`` so the choice stays the user's.

        Raises
        ------
        UnusableExport
            A header chosen twice or not in the file, a required field without a header, an identifier-like
            header chosen without being listed in ``keep_identifiers``, an incomplete long layout.
        """
        fields = fields_of(kind)
        headers = [h.strip() for h in headers]
        long = code_column is not None
        picked = {f: h.strip() for f, h in choices.items() if h}
        for f, h in picked.items():
            if f not in fields:
                raise UnusableExport(f"'{f}' is not a {kind} column; use one of: {', '.join(fields)}.")
            if h not in headers:
                raise UnusableExport(f"The file has no column '{h}' (chosen for {f}); choose one of its columns.")
        seen: dict[str, str] = {}
        for f, h in picked.items():
            if h in seen:
                raise UnusableExport(f"'{h}' is chosen for both {seen[h]} and {f}; a column can fill one field only.")
            seen[h] = f
        required = ("patient_id", "assessment_date") if long else REQUIRED[kind]
        missing = [f for f in required if f not in picked]
        if missing:
            raise UnusableExport(f"Choose the column that holds {missing[0]} (required): "
                                 f"{field_description(kind, missing[0])}")
        keep = {normalise_header(h) for h in keep_identifiers}
        for f, h in picked.items():
            if looks_like_identifier(h) and normalise_header(h) not in keep:
                raise UnusableExport(
                    f"'{h}' looks like a direct identifier; it is kept as {f} only when you confirm it "
                    "(keep_identifiers). Otherwise choose another column.")
        columns: dict[str, str] = {h: f for f, h in picked.items()}
        if long:
            if kind != "followups":
                raise UnusableExport("Only followups can be read from a long file (one row per questionnaire).")
            if code_column not in headers or not value_columns or any(v not in headers for v in value_columns):
                raise UnusableExport("Choose the column with the instrument code and the column(s) with the score.")
            clash = ({code_column, *value_columns}) & set(columns)
            if clash:
                raise UnusableExport(f"'{min(clash)}' is chosen both as a field and as the code/score column; "
                                     "choose one.")
            code_map = {str(c): str(t) for c, t in (codes or {}).items() if t}
            if not code_map:
                raise UnusableExport("Choose the measure of at least one instrument code (e.g. 44261-6 → phq9).")
        else:
            code_map = {}
        canonical = set(read_columns(kind))
        special = {code_column, *value_columns} if long else set()
        for h in headers:
            if h in columns or h in special or not normalise_header(h):
                continue
            if normalise_header(h) in canonical and not looks_like_identifier(h):
                columns[h] = EXTRA  # unmapped: shown, never read as the canonical column of the same name
        return cls(kind=kind, columns=columns,
                   keep_identifiers=tuple(h for h in picked.values() if normalise_header(h) in keep),
                   code_column=code_column, value_columns=tuple(value_columns), codes=code_map,
                   values={k: dict(v) for k, v in (values or {}).items()}, name=name, description=description,
                   window_days=window_days, scale={k: float(v) for k, v in (scale or {}).items() if k in picked},
                   dates=dates, strip_prefix=tuple(strip_prefix),
                   items={m: tuple(h) for m, h in (items or {}).items()})

    @classmethod
    def from_preset(cls, preset: Preset, kind: str) -> Mapping:
        """The section of ``kind`` of a preset or saved mapping, as an editable Mapping."""
        section = preset.data.get(kind, {})
        long = section.get("long", {})
        value = long.get("value", [])
        prefix = section.get("strip_prefix", ())
        return cls(kind=kind, columns=dict(section.get("columns", {})),
                   strip_prefix=(prefix,) if isinstance(prefix, str) else tuple(prefix),
                   window_days=section.get("window_days"),
                   keep_identifiers=tuple(section.get("keep_identifiers", [])),
                   code_column=long.get("code"), value_columns=tuple([value] if isinstance(value, str) else value),
                   codes=dict(section.get("codes", {})), values=dict(section.get("values", {})),
                   name=preset.name, description=preset.description, scale=dict(section.get("scale", {})),
                   dates=preset.dates, items={m: tuple(h) for m, h in section.get("items", {}).items()})

    def to_dict(self) -> dict[str, Any]:
        section: dict[str, Any] = {}
        if self.keep_identifiers:
            section["keep_identifiers"] = list(self.keep_identifiers)
        section["columns"] = dict(self.columns)
        if self.strip_prefix:
            section["strip_prefix"] = self.strip_prefix[0] if len(self.strip_prefix) == 1 else list(self.strip_prefix)
        if self.window_days is not None:
            section["window_days"] = int(self.window_days)
        if self.code_column:
            section["long"] = {"code": self.code_column, "value": list(self.value_columns)}
            section["codes"] = dict(self.codes)
        if self.values:
            section["values"] = {k: dict(v) for k, v in self.values.items()}
        if self.scale:
            section["scale"] = dict(self.scale)
        if self.items:
            section["items"] = {m: list(h) for m, h in self.items.items()}
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.dates:
            out["dates"] = self.dates
        out[self.kind] = section
        return out

    def to_toml(self) -> str:
        """The mapping file's text (the preset format)."""
        return dumps_toml(self.to_dict(), header=MAPPING_HEADER)

    def to_preset(self) -> Preset:
        """The mapping as a :class:`Preset` (checked exactly as a loaded mapping file is)."""
        return Preset.from_dict(tomllib.loads(self.to_toml()), source=f"{self.name}.toml")

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_toml(), encoding="utf-8")
        return p


# ------------------------------------------------------------------------------------------------------------
# preview
# ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preview:
    """The first rows of a file as the data contract sees them under a mapping.

    ``table``: ``line`` and the canonical columns with parsed values (dates as datetimes, numbers as floats,
    yes/no as booleans), then the ``extra:`` columns as text. ``issues``: ``file``, ``line``, ``column``,
    ``value``, ``reason`` for those rows (rules that need the other files, such as "has a ketamine session",
    are checked on loading). ``rows``: records in the file.
    """

    kind: str
    table: pd.DataFrame
    issues: pd.DataFrame
    rows: int
    notes: tuple[str, ...] = ()


def preview(file_bytes: bytes, kind: str, mapping: Mapping | Preset | str | None, n: int = 10, *,
            dates: str = "iso", name: str | None = None, upload_date: date | None = None) -> Preview:
    """Read ``file_bytes`` with ``mapping`` and check its first ``n`` rows (follow-ups, for a long file).

    Raises
    ------
    UnusableExport
        The file cannot be read or a required column is missing under this mapping.
    """
    from schemas.validate import ISSUE_COLUMNS, _validate_file

    preset = mapping.to_preset() if isinstance(mapping, Mapping) else mapping
    raw = read_export(file_bytes, kind=kind, name=name, preset=preset, dates=dates)
    head = raw.frame.head(n).reset_index(drop=True)
    typed, issues = _validate_file(dataclasses.replace(raw, frame=head), dates,  # type: ignore[arg-type]
                                   pd.Timestamp(upload_date or date.today()))
    table = raw.explain_issues(issues.table())
    if len(head) == len(raw.frame):  # every row is shown: so is every issue of reading
        last = raw.rows + 10**9
    elif raw.sources is not None:
        shown = raw.sources[raw.sources["followup_line"].isin(head["line"])]["line"]
        last = int(shown.max()) if len(shown) else 0
    else:
        last = int(head["line"].max()) if len(head) else 0
    read_issues = pd.DataFrame([i for i in raw.issues if i["line"] <= last], columns=ISSUE_COLUMNS)
    parts = [t for t in (table, read_issues) if len(t)]
    all_issues = pd.concat(parts, ignore_index=True).sort_values("line", kind="stable").reset_index(drop=True) \
        if parts else pd.DataFrame(columns=ISSUE_COLUMNS)
    extras = [c for c in head.columns if c.startswith("extra:")]
    shown_table = pd.concat([typed.reset_index(drop=True), head[extras]], axis=1)
    notes = list(raw.notes)
    notes.append("Preview of the first rows only; rules that need the other files (a ketamine session before "
                 "each follow-up, patients listed in sessions) are checked when the files are loaded.")
    return Preview(kind=kind, table=shown_table, issues=all_issues, rows=raw.rows, notes=tuple(notes))


def distinct_codes(file_bytes: bytes, code_column: str, *, limit: int = 200) -> list[str]:
    """The distinct instrument codes in a long file's code column (most frequent first, at most ``limit``)."""
    table = read_table(file_bytes)
    if code_column not in table.frame.columns:
        return []
    counts = table.frame[code_column].dropna().str.strip().value_counts(sort=True)
    return [str(c) for c in counts.index[:limit]]


# ------------------------------------------------------------------------------------------------------------
# writing canonical exports in a preset's layout
# ------------------------------------------------------------------------------------------------------------

def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Exactly the text a canonical CSV file would hold ("" for missing)."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    buffer.seek(0)
    return pd.read_csv(buffer, dtype=str, keep_default_na=False)


def _inverse_values(text: pd.DataFrame, section: dict[str, Any]) -> pd.DataFrame:
    out = text.copy()
    for col, entries in section.get("values", {}).items():
        if col not in out.columns:
            continue
        own = out[col].str.lower()
        done = pd.Series(False, index=out.index)
        for written, target in entries.items():  # table entries (one value sets several columns) first
            if not isinstance(target, dict):
                continue
            match = ~done & own.eq(str(target.get(col, "")).lower())
            for t, v in target.items():
                if t != col:
                    match &= out[t].str.lower().eq(str(v).lower()) if t in out.columns else False
            if match.any():
                out.loc[match, col] = written
                for t in target:
                    if t != col and t in out.columns:
                        out.loc[match, t] = ""
                done |= match
        inverse: dict[str, str] = {}
        for written, target in entries.items():
            if isinstance(target, str):
                inverse.setdefault(target.lower(), written)
        plain = ~done & own.isin(list(inverse))
        out.loc[plain, col] = own[plain].map(inverse)
    return out


def _rename(text: pd.DataFrame, section: dict[str, Any]) -> pd.DataFrame:
    first_header: dict[str, str] = {}
    for header, target in section.get("columns", {}).items():
        if target != EXTRA:
            first_header.setdefault(target, header)
    return text.rename(columns=first_header)


def _value_column(ctype: str, value_headers: list[str]) -> str:
    if len(value_headers) == 1:
        return value_headers[0]
    want = {"integer": ("int",), "number": ("float", "dec", "num", "real")}.get(ctype, ("str", "text"))
    for h in value_headers:
        if any(w in h.lower() for w in want):
            return h
    return value_headers[0] if ctype in ("integer", "number") else value_headers[-1]


def _to_long(text: pd.DataFrame, kind: str, section: dict[str, Any]) -> pd.DataFrame:
    long = section["long"]
    value_headers = [long["value"]] if isinstance(long["value"], str) else list(long["value"])
    first_code: dict[str, str] = {}
    for code, target in section.get("codes", {}).items():
        first_code.setdefault(target, code)
    attributes = [t for t in section.get("columns", {}).values() if t not in (EXTRA, "patient_id", "assessment_date")]
    types = read_columns(kind)
    measures = [c for c in text.columns if c not in ("patient_id", "assessment_date", *attributes)]
    uncoded = [c for c in measures if c not in first_code and (text[c] != "").any()]
    if uncoded:
        raise UnusableExport(f"The layout has no code for {', '.join(uncoded)}; add one to [{kind}.codes].")
    parts = []
    for order, col in enumerate(c for c in measures if c in first_code):
        have = text[text[col] != ""]
        part = pd.DataFrame({"__row": have.index, "__order": order, "patient_id": have["patient_id"],
                             "assessment_date": have["assessment_date"]})
        for a in attributes:
            part[a] = have[a]
        part[long["code"]] = first_code[col]
        target_col = _value_column(types[col], value_headers)
        for v in value_headers:
            part[v] = have[col] if v == target_col else ""
        parts.append(part)
    rows = pd.concat(parts, ignore_index=True).sort_values(["__row", "__order"], kind="stable")
    rows = rows.drop(columns=["__row", "__order"]).reset_index(drop=True)
    if long.get("id"):
        rows.insert(0, long["id"], [f"obs-{i:07d}" for i in range(1, len(rows) + 1)])
    return rows


def to_preset_layout(canonical_frames: AbcMapping[str, pd.DataFrame], preset: Preset | str) -> dict[str, bytes]:
    """Write canonical exports as a system using ``preset`` would export them (CSV bytes per kind).

    Column names become the preset's first header for each column, values the preset's first spelling
    (a value that sets two columns is used when both agree, and the implied column is left empty), and a
    long layout writes one row per measure with the preset's first code. Reading the result with the same
    preset gives back the same accepted data (the round-trip tests prove it for every preset).
    """
    loaded = preset if isinstance(preset, Preset) else load_preset(preset)
    out: dict[str, bytes] = {}
    for kind, frame in canonical_frames.items():
        if kind not in COLUMNS:
            raise UnusableExport(f"Unknown export kind '{kind}'; use sessions, followups or patients.")
        section = loaded.data.get(kind, {})
        text = _inverse_values(_as_text(frame), section)
        if "long" in section:
            text = _to_long(text, kind, section)
        text = _rename(text, section)
        out[kind] = text.to_csv(index=False, lineterminator="\n").encode("utf-8")
    return out


def write_preset_samples(canonical_frames: AbcMapping[str, pd.DataFrame], out_dir: str | Path, *,
                         presets: Sequence[str] | None = None) -> dict[str, dict[str, Path]]:
    """Write ``<out_dir>/<preset>/<kind>.csv`` for each preset (default: every preset but canonical)."""
    from schemas.presets import available_presets

    names = list(presets) if presets is not None else [p for p in available_presets() if p != "canonical"]
    written: dict[str, dict[str, Path]] = {}
    for name in names:
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = {}
        for kind, data in to_preset_layout(canonical_frames, name).items():
            path = folder / f"{kind}.csv"
            path.write_bytes(data)
            written[name][kind] = path
    return written
