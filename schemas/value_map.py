"""The value step of the mapping: every distinct value of a category column, its count and a suggested meaning.

A clinic's export writes ``Ketamine Infusion``, ``Spravato 84mg``, ``No Show`` or ``G2083`` where the contract reads
``ketamine``, ``intranasal``, ``no_show``. :func:`value_table` lists each distinct value of the mapped category
columns (visit type, route, status, urine result, sex, substance, program, adverse events item by item) with its
count and a suggestion from :func:`suggest_value`. A suggestion may set several columns (``Spravato 84mg`` →
session_type ketamine, route intranasal, dose_mg 84); the saved mapping (``[kind.values.column]``) keeps it. A value
the user chose to keep as written is saved as ``""`` so reopening the mapping never suggests it again.

Notes
-----
Suggestions are conservative: a value is suggested only from its own words (canonical values, the contract's
aliases, a short list of clinic words, HCPCS G2082/G2083 for esketamine and CPT psychotherapy codes), never from
similarity alone; a value with no suggestion is listed as ``unknown`` and left for the user.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as AbcMapping
from typing import Any

import pandas as pd

from schemas.columns import (
    ADVERSE_EVENT_ALIASES,
    ADVERSE_EVENTS,
    OBSERVATION_STATUSES,
    ROUTES,
    SESSION_STATUSES,
    SESSION_TYPES,
    SEXES,
    STATUS_ALIASES,
    STATUSES,
    SUBSTANCES,
    URINE_TOX,
)

# canonical columns whose values are listed (program is the clinic's own text: listed, never suggested)
VALUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": ("session_type", "route", "status", "adverse_events", "primary_substance", "program", "sex"),
    "followups": ("urine_tox", "status", "observation_status", "any_use"),
    "patients": ("primary_substance", "program", "sex"),
}
ALLOWED: dict[tuple[str, str], tuple[str, ...]] = {
    ("sessions", "session_type"): SESSION_TYPES, ("sessions", "route"): ROUTES,
    ("sessions", "status"): SESSION_STATUSES, ("sessions", "adverse_events"): ADVERSE_EVENTS,
    ("followups", "urine_tox"): URINE_TOX, ("followups", "status"): STATUSES,
    ("followups", "observation_status"): OBSERVATION_STATUSES, ("followups", "any_use"): ("yes", "no"),
}
for _k in ("sessions", "patients"):
    ALLOWED[(_k, "primary_substance")] = SUBSTANCES
    ALLOWED[(_k, "sex")] = SEXES
MAX_VALUES = 200  # distinct values listed per column (most frequent first)

# words of a value → canonical value (whole words of the lower-cased value; first rule that matches wins)
_WORDS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "session_type": (
        (("integration",), "integration"),
        (("ketamine", "kap", "spravato", "esketamine", "ketalar", "infusion", "troche", "dosing"), "ketamine"),
        (("psychotherapy", "therapy", "counselling", "counseling", "cbt", "dbt", "emdr"), "psychotherapy"),
        (("assessment", "intake", "evaluation", "eval", "screening", "consult", "consultation"), "assessment")),
    "route": (
        (("iv", "intravenous", "infusion"), "iv"), (("im", "intramuscular", "injection"), "im"),
        (("sublingual", "sl", "troche", "lozenge", "rdt", "odt"), "sublingual"),
        (("intranasal", "nasal", "spray", "spravato", "esketamine", "in"), "intranasal"),
        (("oral", "po", "mouth"), "oral")),
    "urine_tox": (
        (("not", "done"), "not_done"), (("not", "collected"), "not_done"), (("not", "performed"), "not_done"),
        (("not", "detected"), "negative"), (("none", "detected"), "negative"),
        (("negative", "neg"), "negative"), (("positive", "pos", "detected"), "positive")),
    "sex": ((("f", "female", "woman"), "female"), (("m", "male", "man"), "male"),
            (("nonbinary", "non", "x", "o", "intersex"), "other"), (("u", "unknown", "unk", "declined"), "unknown")),
    "primary_substance": (
        (("alcohol", "aud", "etoh"), "alcohol"), (("opioid", "opioids", "oud", "heroin", "fentanyl"), "opioids"),
        (("cocaine", "crack"), "cocaine"), (("methamphetamine", "meth", "amphetamine"), "methamphetamine"),
        (("cannabis", "marijuana", "thc"), "cannabis")),
    "any_use": ((("yes", "y", "true", "1"), "yes"), (("no", "n", "false", "0"), "no")),
    "status": ((("active", "enrolled"), "active"), (("lost",), "lost_to_follow_up"),
               (("withdrew", "withdrawn", "dropped"), "withdrew"), (("deceased", "died"), "deceased"),
               (("discharged", "graduated"), "completed")),
}
# words that mean "every one of these" for a multi-word rule (all must be present)
_ALL_WORDS = {("not", "done"), ("not", "collected"), ("not", "performed"), ("not", "detected"), ("none", "detected")}
# procedure codes (HCPCS / CPT) → what the visit was
_CODES: dict[str, dict[str, str]] = {
    "g2082": {"session_type": "ketamine", "route": "intranasal", "dose_mg": "56"},
    "g2083": {"session_type": "ketamine", "route": "intranasal", "dose_mg": "84"},
    "90832": {"session_type": "psychotherapy"}, "90834": {"session_type": "psychotherapy"},
    "90837": {"session_type": "psychotherapy"}, "90853": {"session_type": "psychotherapy"},
    "90791": {"session_type": "assessment"}, "90792": {"session_type": "assessment"},
}
_DOSE = re.compile(r"(\d+(?:\.\d+)?)\s*mg\b")


def _words(value: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", value.lower())


def _canonical_text(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def reads_as_is(kind: str, column: str, value: str) -> bool:
    """True when validation reads ``value`` as a contract value without a mapping (lower-cased; status columns
    also with spaces and '-' as '_', and their aliases)."""
    allowed = ALLOWED.get((kind, column), ())
    low = value.strip().lower()
    if (kind, column) in STATUS_ALIASES:
        low = _canonical_text(value)
        return low in allowed or low in STATUS_ALIASES[(kind, column)]
    return low in allowed


def suggest_value(kind: str, column: str, value: str) -> dict[str, str] | None:
    """What ``value`` written in ``column`` means: {canonical column: canonical value}, or None (no suggestion).

    The first entry is always ``column`` itself. A visit type naming ketamine with a route or a dose in mg also
    sets ``route`` / ``dose_mg``; ``Spravato`` / esketamine implies intranasal. A value that is already canonical
    gives ``{column: value}``.
    """
    allowed = ALLOWED.get((kind, column))
    text = _canonical_text(value)
    if allowed is not None and text in allowed:
        return {column: text}
    aliases = dict(STATUS_ALIASES.get((kind, column), {}))
    if column == "adverse_events":
        aliases.update({k.replace(" ", "_").replace("-", "_"): v for k, v in ADVERSE_EVENT_ALIASES.items()})
    if text in aliases:
        return {column: aliases[text]}
    if kind == "followups" and column == "status" and text in ("completed", "complete", "final", "amended"):
        return None  # "Completed" of a questionnaire or a record is not a completed treatment: the user decides
    if column == "urine_tox" and "non" in _words(value):
        return None  # "non-negative", "non-detected": read either way, so the user decides
    if column == "session_type" and (code := _CODES.get(text)):
        return dict(code)
    words = _words(value)
    out: dict[str, str] = {}
    for rule_words, target in _WORDS.get(column, ()):
        hit = all(w in words for w in rule_words) if rule_words in _ALL_WORDS else any(w in words for w in rule_words)
        if hit:
            out[column] = target
            break
    if column == "session_type" and out.get(column) == "ketamine":
        for rule_words, route in _WORDS["route"]:
            if route != "iv" and "in" in rule_words:  # 'in' alone is too common a word in a visit type
                rule_words = tuple(w for w in rule_words if w != "in")
            if any(w in words for w in rule_words):
                out["route"] = route
                break
        if dose := _DOSE.search(value.lower()):
            out["dose_mg"] = dose.group(1)
        if "kap" in words or ("assisted" in words and {"psychotherapy", "therapy"} & set(words)):
            out["also"] = "psychotherapy"  # ketamine-assisted psychotherapy: also a psychotherapy contact
    return out or None


def _items(values: pd.Series) -> pd.Series:
    """A list column's items (``drowsy; dizziness``, ``nausea, headache``), one per row, trimmed."""
    return values.dropna().astype(str).str.split(r"\s*[;,|]\s*", regex=True).explode().str.strip().replace("", pd.NA)


def value_table(text: AbcMapping[str, pd.Series], kind: str, saved: AbcMapping[str, AbcMapping[str, Any]] | None = None,
                *, limit: int = MAX_VALUES) -> pd.DataFrame:
    """Every distinct value of the category columns in ``text`` (canonical column → the file's text values).

    ``saved`` is a mapping's ``values`` section (canonical column → {value: target}); its entries win over
    suggestions (an entry ``""`` keeps the value as written).

    Returns
    -------
    pandas.DataFrame
        ``column``, ``value`` (as written, most frequent first), ``count`` (rows; items for adverse events),
        ``target`` (dict column → value, empty when kept as written), ``status``: ``canonical`` (already a contract
        value), ``saved`` (from the mapping), ``suggested``, ``unknown`` (no suggestion: kept as written, and set
        aside when the column has fixed values) or ``kept`` (the user keeps it as written).
    """
    saved = {c: {str(k).strip().lower(): v for k, v in m.items()} for c, m in (saved or {}).items()}
    rows: list[dict[str, Any]] = []
    for column in VALUE_COLUMNS.get(kind, ()):
        if column not in text:
            continue
        values = _items(text[column]) if column == "adverse_events" else text[column].dropna().astype(str).str.strip()
        counts = values[values.ne("")].value_counts(sort=True).head(limit)
        allowed = ALLOWED.get((kind, column))
        for value, count in counts.items():
            value = str(value)
            entry = saved.get(column, {}).get(value.lower())
            if entry is not None:
                target = {} if entry == "" else (dict(entry) if isinstance(entry, dict) else {column: str(entry)})
                status = "kept" if entry == "" else "saved"
            elif allowed is not None and reads_as_is(kind, column, value):
                target, status = {column: _canonical_text(value)}, "canonical"
            elif (suggestion := suggest_value(kind, column, value)) is not None:
                target, status = suggestion, "suggested"
            else:
                target, status = {}, "unknown"
            rows.append({"column": column, "value": value, "count": int(count), "target": target, "status": status})
    return pd.DataFrame(rows, columns=["column", "value", "count", "target", "status"])


def values_section(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """A mapping's ``values`` section from a (possibly edited) :func:`value_table`: canonical values are left out,
    a value kept as written is saved as ``""``, one that sets only its own column as text, else as a table."""
    out: dict[str, dict[str, Any]] = {}
    for row in table.itertuples(index=False):
        if row.status in ("canonical", "unknown"):
            continue
        target = dict(row.target)
        if not target:
            entry: Any = ""
        elif list(target) == [row.column]:
            entry = target[row.column]
        else:
            entry = target
        out.setdefault(row.column, {})[row.value] = entry
    return out


def mapped_text(frame: pd.DataFrame, columns: AbcMapping[str, str]) -> dict[str, pd.Series]:
    """The file's text values of each mapped canonical column (``columns``: header as written → canonical)."""
    return {target: frame[header] for header, target in columns.items() if header in frame.columns
            and target != "extra"}


def target_options(kind: str, column: str, suggested: AbcMapping[str, str] | None = None) -> list[dict[str, str]]:
    """What a value of ``column`` may be set to: the suggestion when it sets several columns, each allowed value,
    and ``{}`` (kept as written)."""
    options: list[dict[str, str]] = []
    if suggested and len(suggested) > 1:
        options.append(dict(suggested))
    options += [{column: v} for v in ALLOWED.get((kind, column), ())]
    if suggested and dict(suggested) not in options:
        options.insert(0, dict(suggested))
    options.append({})
    return options


def describe_target(target: AbcMapping[str, str]) -> str:
    """``session_type ketamine, route intranasal, dose_mg 84`` (what a value sets, for the page)."""
    return ", ".join(f"also a {v} contact" if c == "also" else f"{c} {v}" for c, v in target.items()) \
        or "kept as written"
