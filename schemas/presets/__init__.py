"""Column presets and saved mappings: how other export layouts map onto the canonical columns.

A preset is a TOML data file beside this module (``<name>.toml``); a user's saved mapping is the same
format in a file of their own (``kap-outcomes ... --mapping FILE``). One file describes up to three exports,
each in its own section (``sessions``, ``followups``, ``patients``)::

    name = "my-clinic"
    description = "Our EHR's encounter export and our outcome platform's observation file"

    [sessions.columns]              # export header → canonical column
    "Encounter Date" = "session_date"
    "Internal Note" = "extra"       # kept for display only, never analysed

    [sessions.values.route]         # export value → canonical value (case-insensitive)
    "Intravenous" = "iv"

    [sessions.values.session_type]  # one value may set several columns
    "Spravato" = { session_type = "ketamine", route = "intranasal" }

    [followups]
    keep_identifiers = ["MRN"]      # headers that look like direct identifiers, mapped on purpose

    [followups.columns]
    "MRN" = "patient_id"
    "effectiveDate" = "assessment_date"

    [followups.long]                # one row per completed questionnaire, pivoted into follow-ups
    code = "code"
    value = ["valueInt", "valueFloat", "valueString"]

    [followups.codes]               # instrument code → canonical follow-up column
    "44261-6" = "phq9"

    [sessions]
    strip_prefix = "Patient/"       # patient ids written as references: "Patient/8f3c…" is patient "8f3c…"

    [followups]
    window_days = 28                # the days the use questions cover, for rows that do not say (default 30)

Headers, values and codes are matched after trimming and lower-casing (headers and codes also ignore
punctuation), so a file lists each spelling once. Files whose name starts with ``_`` are data for the
mapping step (header synonyms, known codes), not presets.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from schemas.columns import COLUMNS, SESSION_TYPES, read_columns
from schemas.errors import UnusableExport

PRESET_DIR = Path(__file__).parent
EXTRA = "extra"  # mapping target: keep the column for display, never analyse it
LONG_KINDS = ("followups",)
_SECTION_KEYS = ("columns", "values", "keep_identifiers", "long", "codes", "strip_prefix", "window_days", "scale",
                 "items")
# questionnaire items summed into totals: instrument → (number of items, highest item score)
ITEM_COUNTS = {"phq9": 9, "gad7": 7}
ITEM_MAX = 3
# long files: a code may fill one item (``44250-9`` = "phq9_item1"); the items are summed into the total
ITEM_TARGETS = {f"{m}_item{i}": m for m, n in ITEM_COUNTS.items() for i in range(1, n + 1)}
# LOINC codes of the PHQ-9 and GAD-7 items, in item order
ITEM_CODES = {
    **{c: f"phq9_item{i}" for i, c in enumerate(("44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2",
                                                   "44252-5", "44253-3", "44260-8"), start=1)},
    **{c: f"gad7_item{i}" for i, c in enumerate(("69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8",
                                                   "69736-7"), start=1)},
}


def sum_items(items: pd.DataFrame, n: int) -> pd.Series:
    """Totals of ``n`` item columns (numbers, missing as NaN): the sum when every item is answered, the sum x n/(n-1)
    rounded half up when one is missing (PHQ scoring guidance), missing otherwise."""
    missing = items.isna().sum(axis=1)
    total = items.sum(axis=1, min_count=1)
    return total.where(missing == 0, np.floor(total * n / (n - 1) + 0.5).where(missing == 1))


def item_note(measure: str, how: str, filled: int, prorated: int, short: int) -> str:
    n = ITEM_COUNTS[measure]
    return (f"{measure} totals computed from items {how} for {filled:,} row(s) (each item 0-{ITEM_MAX}; {prorated:,} "
            f"with one item missing prorated: sum x {n}/{n - 1}, rounded)"
            + (f"; {short:,} row(s) with two or more items missing have no {measure} total" if short else "") + ".")
DATE_ORDERS = ("iso", "dayfirst", "monthfirst")

ValueTarget = str | dict[str, str]
ALSO = "also"  # in a visit-type table: the visit is also a contact of this type (KAP Session: also psychotherapy)
ALSO_COLUMN = "extra:also counts as"  # where the reader keeps it until schemas.validate adds the contacts


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def norm_code(code: str) -> str:
    """Instrument codes are matched like headers: ``PHQ-9``, ``phq 9`` and ``phq_9`` are one code."""
    return _norm(code)


@dataclass(frozen=True)
class LongLayout:
    """How a long file (one row per completed questionnaire) names its code and value columns.

    ``code`` and ``value`` are normalised headers; ``codes`` maps normalised instrument codes to canonical
    columns of the export. ``id`` is an optional per-observation id column (kept for display).
    """

    code: str
    value: tuple[str, ...]
    codes: dict[str, str]
    id: str | None = None


@dataclass(frozen=True)
class Preset:
    """A parsed preset or mapping file.

    ``columns``: kind → {normalised header: canonical column or ``"extra"``}. ``values``: kind → column →
    {lower-case value: canonical value, or a table of canonical column → value}. ``long``: kind →
    :class:`LongLayout` for long files. ``keep_identifiers``: kind → normalised headers that look like
    direct identifiers but are mapped on purpose. ``data``: the TOML content (for saving and for writing
    files in this layout).
    """

    name: str
    description: str = ""
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    values: dict[str, dict[str, dict[str, ValueTarget]]] = field(default_factory=dict)
    long: dict[str, LongLayout] = field(default_factory=dict)
    keep_identifiers: dict[str, frozenset[str]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    strip_prefix: dict[str, tuple[str, ...]] = field(default_factory=dict)
    window_days: dict[str, int] = field(default_factory=dict)
    scale: dict[str, dict[str, float]] = field(default_factory=dict)
    dates: str | None = None
    items: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def column_map(self, kind: str) -> dict[str, str]:
        return self.columns.get(kind, {})

    def long_layout(self, kind: str) -> LongLayout | None:
        return self.long.get(kind)

    def map_values(self, kind: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Apply the value maps (see :meth:`apply_values`); rows with conflicts keep their mapped values."""
        return self.apply_values(kind, frame)[0]

    def apply_values(self, kind: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
        """Map export values onto canonical ones.

        A plain entry replaces the value; a table entry (``{session_type = "ketamine", route = "iv"}``)
        also fills the other columns it names when they are empty. When such a column already holds a
        different value, the row is reported as a conflict (never silently overwritten).

        Returns
        -------
        (frame, conflicts)
            ``conflicts`` holds one dict per conflicting cell: ``index`` (frame index label), ``column``,
            ``value`` (the value in the file), ``reason``.
        """
        maps = self.values.get(kind, {})
        originals = {col: frame[col].copy() for col in maps if col in frame.columns}
        lists = {c for c, t in read_columns(kind).items() if t == "list"}
        for col, mapping in maps.items():  # plain entries first, each from the column's own values
            plain = {k: v for k, v in mapping.items() if isinstance(v, str) and v}  # "" keeps the value as written
            if col in originals and plain and col in lists:  # a list: each item is mapped (``drowsy; dizzy``)
                frame[col] = map_list_items(originals[col], plain)
            elif col in originals and plain:
                mapped = originals[col].str.lower().map(plain)
                frame[col] = mapped.where(mapped.notna(), frame[col])
        conflicts: list[dict] = []
        for col, mapping in maps.items():
            tables = {k: v for k, v in mapping.items() if isinstance(v, dict)}
            if col not in originals or not tables or col in lists:
                continue
            low = originals[col].str.lower()
            targets = pd.DataFrame.from_dict(tables, orient="index")
            aligned = targets.reindex(low.to_numpy())
            aligned.index = frame.index
            for target in targets.columns:
                new = aligned[target].astype("string")
                given = new.notna()
                if target == ALSO:
                    frame[ALSO_COLUMN] = new
                    continue
                if target == col:
                    frame[col] = new.where(given, frame[col])
                    continue
                if target not in frame.columns:
                    frame[target] = pd.Series(pd.NA, index=frame.index, dtype="string")
                current = frame[target].astype("string")
                clash = (given & current.notna() & (current.str.strip().str.lower() != new.str.lower())).fillna(False)
                for idx in frame.index[clash.to_numpy()]:
                    conflicts.append({
                        "index": idx, "column": target, "value": str(current[idx]),
                        "reason": f"'{originals[col][idx]}' in {col} means {target} {new[idx]}, but {target} says "
                                  f"'{current[idx]}'; correct one of the two"})
                frame[target] = current.where(~given | current.notna(), new)
        frame = self._scaled(kind, frame)
        frame, item_conflicts = self._item_totals(kind, frame)
        return frame, conflicts + item_conflicts

    def _item_totals(self, kind: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
        """Sum ``[kind.items]`` (instrument → its item headers in order) into the instrument's total.

        Each item is 0-3 (another value sets the row aside, naming the item). The total is the sum when every item
        is answered; with one item missing it is prorated (sum x n/(n-1), rounded half up), as the PHQ scoring
        guidance does; with more missing it stays missing, and the count is reported. A total written in the file
        is kept (items fill it only where it is empty). Notes go to ``frame.attrs["notes"]``.
        """
        conflicts: list[dict] = []
        notes: list[str] = list(frame.attrs.get("notes", []))
        by_norm = {_norm(c[len("extra:"):]): c for c in frame.columns if str(c).startswith("extra:")}
        for measure, headers in self.items.get(kind, {}).items():
            cols = [by_norm.get(_norm(h)) for h in headers]
            absent = [h for h, c in zip(headers, cols) if c is None]
            if absent:
                notes.append(f"{measure} items: the file has no column {', '.join(repr(h) for h in absent[:3])}; "
                             f"{measure} totals are not computed from items.")
                continue
            raw = pd.DataFrame({h: frame[c] for h, c in zip(headers, cols)})
            nums = raw.apply(pd.to_numeric, errors="coerce")
            bad = (raw.notna() & ~nums.isin(range(ITEM_MAX + 1))).to_numpy()
            for i, j in zip(*bad.nonzero()):
                conflicts.append({"index": frame.index[i], "column": headers[j], "value": str(raw.iat[i, j]),
                                  "reason": f"is not a {measure} item score (0-{ITEM_MAX}); correct the answer"})
            n = ITEM_COUNTS[measure]
            missing = nums.isna().sum(axis=1)
            total = sum_items(nums, n)
            current = frame[measure] if measure in frame.columns else pd.Series(pd.NA, index=frame.index,
                                                                               dtype="string")
            fill = current.isna() & total.notna() & ~pd.Series(bad.any(axis=1), index=frame.index)
            frame[measure] = current.astype("string").where(~fill, total.map(
                lambda x: f"{x:.0f}", na_action="ignore").astype("string"))
            prorated = int((fill & (missing == 1)).sum())
            short = int((current.isna() & (missing > 1) & (missing < n)).sum())
            notes.append(item_note(measure, f"{', '.join(headers[:2])} … {headers[-1]}", int(fill.sum()), prorated,
                                   short))
        if notes:
            frame.attrs["notes"] = notes
        return frame, conflicts

    def _scaled(self, kind: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Apply ``[kind.scale]`` (column → factor: pounds to kg, a 0-100 scale to 0-10) to the text of number
        columns; a value that is not a number stays as written (and is set aside by validation)."""
        for col, factor in self.scale.get(kind, {}).items():
            if col in frame.columns:
                frame.attrs["notes"] = [*frame.attrs.get("notes", []),
                                        f"{col} read x {factor:g} as the mapping says (a unit or scale conversion)."]
                number = pd.to_numeric(frame[col], errors="coerce")
                scaled = (number * factor).round(9).map(lambda x: f"{x:.12g}", na_action="ignore").astype("string")
                frame[col] = scaled.where(number.notna(), frame[col])
        return frame

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "preset") -> Preset:
        from schemas.headers import looks_like_identifier  # reader imports this module

        columns: dict[str, dict[str, str]] = {}
        values: dict[str, dict[str, dict[str, ValueTarget]]] = {}
        long: dict[str, LongLayout] = {}
        keep: dict[str, frozenset[str]] = {}
        prefixes: dict[str, tuple[str, ...]] = {}
        windows: dict[str, int] = {}
        scales: dict[str, dict[str, float]] = {}
        item_sets: dict[str, dict[str, tuple[str, ...]]] = {}
        dates = data.get("dates")
        if dates is not None and dates not in DATE_ORDERS:
            raise UnusableExport(f"{source}: dates = {dates!r}; use one of: {', '.join(DATE_ORDERS)}.")
        for kind in COLUMNS:
            section = data.get(kind, {})
            if not isinstance(section, dict):
                raise UnusableExport(f"{source}: [{kind}] must be a table of settings, not {section!r}.")
            unknown = [k for k in section if k not in _SECTION_KEYS]
            if unknown:
                raise UnusableExport(f"{source}: [{kind}] has an unknown setting '{unknown[0]}'; use only: "
                                     f"{', '.join(_SECTION_KEYS)}.")
            known = read_columns(kind)
            keep[kind] = frozenset(_norm(h) for h in section.get("keep_identifiers", []))
            cols: dict[str, str] = {}
            for header, target in section.get("columns", {}).items():
                if target != EXTRA and target not in known:
                    raise UnusableExport(f"{source}: '{header}' maps to '{target}', which is not a {kind} column; "
                                         f"use one of: {', '.join(known)} (or \"{EXTRA}\" to keep it for display).")
                if target != EXTRA and looks_like_identifier(header) and _norm(header) not in keep[kind]:
                    raise UnusableExport(
                        f"{source}: '{header}' looks like a direct identifier and is mapped to {target}. "
                        f"If that is intended, list it under [{kind}] as keep_identifiers = [\"{header}\"]; "
                        "otherwise map another column.")
                if _norm(header) in cols and cols[_norm(header)] != target:
                    raise UnusableExport(f"{source}: '{header}' is mapped twice ({cols[_norm(header)]} and {target}); "
                                         "keep one.")
                cols[_norm(header)] = target
            if "strip_prefix" in section:
                given = section["strip_prefix"]
                given = [given] if isinstance(given, str) else given
                if not isinstance(given, list) or not all(isinstance(x, str) and x for x in given):
                    raise UnusableExport(f"{source}: [{kind}] strip_prefix must be text such as \"Patient/\" (or a "
                                         "list of such texts).")
                prefixes[kind] = tuple(sorted(given, key=len, reverse=True))
            if "window_days" in section:
                w = section["window_days"]
                if kind != "followups" or isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 365:
                    raise UnusableExport(f"{source}: window_days = {w!r} under [{kind}]: it belongs under [followups] "
                                         "and is a whole number of days from 1 to 365 (the days the use questions "
                                         "cover, e.g. 28).")
                windows[kind] = int(w)
            for col, factor in section.get("scale", {}).items():
                if known.get(col) not in ("number", "integer") or isinstance(factor, bool) \
                        or not isinstance(factor, (int, float)) or not 0 < factor < 1000:
                    raise UnusableExport(f"{source}: [{kind}.scale] {col} = {factor!r}: a factor (e.g. 0.45359237 for "
                                         "pounds to kg, 0.1 for a 0-100 scale to 0-10) of a number column.")
                scales.setdefault(kind, {})[col] = float(factor)
            for measure, headers in section.get("items", {}).items():
                n = ITEM_COUNTS.get(measure)
                if n is None or not isinstance(headers, list) or len(headers) != n \
                        or not all(isinstance(h, str) and h for h in headers):
                    raise UnusableExport(f"{source}: [{kind}.items] {measure}: list the {n or 'PHQ-9 (9) or GAD-7 (7)'} "
                                         "item columns in order, e.g. phq9 = [\"phq9_q1\", …, \"phq9_q9\"].")
                if any(_norm(h) in cols for h in headers):
                    raise UnusableExport(f"{source}: a {measure} item column is also in [{kind}.columns]; keep it "
                                         "in one place.")
                item_sets.setdefault(kind, {})[measure] = tuple(headers)
            columns[kind] = cols  # several spellings of one column are allowed; a file may carry only one
            values[kind] = _parse_values(section.get("values", {}), kind, source)
            if "long" in section or "codes" in section:
                long[kind] = _parse_long(section, kind, source, cols)
        name = str(data.get("name", Path(source).stem))
        return cls(name=name, description=str(data.get("description", "")), columns=columns, values=values,
                   long=long, keep_identifiers=keep, data=copy.deepcopy(data), strip_prefix=prefixes,
                   window_days=windows, scale=scales, dates=dates, items=item_sets)

    def to_toml(self) -> str:
        """The preset as a TOML file (what :func:`load_mapping_file` reads)."""
        return dumps_toml(self.data if self.data else {"name": self.name, "description": self.description})


def map_list_items(values: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """A list column (``drowsy; Dizzy``) with each item mapped (keys lower-case): items split on ``;`` ``,`` ``|``,
    trimmed, looked up case-insensitively, joined again with ``;``. Arrow kernels only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemas.arrow import text_array, text_series

    written = text_array(values)
    text = pc.utf8_trim(pc.replace_substring_regex(written, r"\s*[;,|]\s*", ";"), ";")
    tokens = pc.split_pattern(text, ";")
    flat = pc.list_flatten(tokens)
    at = pc.index_in(pc.utf8_lower(pc.utf8_trim_whitespace(flat)), value_set=pa.array(list(mapping), type=flat.type))
    if at.null_count == len(at):
        return values
    flat = pc.coalesce(pc.take(pa.array(list(mapping.values()), type=flat.type), at), flat)
    if isinstance(flat, pa.ChunkedArray):
        flat = flat.combine_chunks()
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    rebuilt = pa.ListArray.from_arrays(tokens.offsets, flat.cast(pa.string()), mask=pc.is_null(tokens))
    return text_series(pc.binary_join(rebuilt, ";"), values.index)


def _parse_values(section: dict, kind: str, source: str) -> dict[str, dict[str, ValueTarget]]:
    known = read_columns(kind)
    out: dict[str, dict[str, ValueTarget]] = {}
    for col, mapping in section.items():
        if col not in known:
            raise UnusableExport(f"{source}: [{kind}.values.{col}]: '{col}' is not a {kind} column; "
                                 f"use one of: {', '.join(known)}.")
        entries: dict[str, ValueTarget] = {}
        for key, target in mapping.items():
            if isinstance(target, dict):
                also = target.get(ALSO)
                if also is not None and (kind, col) != ("sessions", "session_type") or also not in (
                        None, *SESSION_TYPES):
                    raise UnusableExport(f"{source}: the value '{key}' of {kind} column {col} sets also = {also!r}; "
                                         "'also' belongs to a sessions visit type and names another session type "
                                         "(e.g. also = \"psychotherapy\").")
                bad = [t for t in target if t not in known and t != ALSO]
                if bad:
                    raise UnusableExport(f"{source}: the value '{key}' of {kind} column {col} sets '{bad[0]}', which "
                                         f"is not a {kind} column; use one of: {', '.join(known)}.")
                entries[str(key).strip().lower()] = {str(t): str(v) for t, v in target.items()}
            else:
                entries[str(key).strip().lower()] = str(target)
        out[col] = entries
    return out


def _parse_long(section: dict, kind: str, source: str, cols: dict[str, str]) -> LongLayout:
    if kind not in LONG_KINDS:
        raise UnusableExport(f"{source}: [{kind}.long]: only followups can be read from a long file (one row per "
                             "questionnaire); remove this section.")
    spec = section.get("long", {})
    code = spec.get("code")
    value = spec.get("value")
    if isinstance(value, str):
        value = [value]
    if not code or not value:
        raise UnusableExport(f"{source}: [{kind}.long] needs code = \"<column with the instrument code>\" and "
                             "value = [\"<column with the score>\", …].")
    codes: dict[str, str] = {}
    known = read_columns(kind)
    attributes = set(cols.values())
    for c, target in section.get("codes", {}).items():
        if target in ITEM_TARGETS:
            codes[norm_code(c)] = str(target)
            continue
        if target not in known or target in ("patient_id", "assessment_date"):
            raise UnusableExport(f"{source}: code '{c}' maps to '{target}', which is not a {kind} measure; "
                                 f"use one of: {', '.join(k for k in known if k not in ('patient_id', 'assessment_date'))}.")
        if target in attributes:
            raise UnusableExport(f"{source}: code '{c}' fills {target}, which a column of the file fills too; "
                                 f"remove {target} from [{kind}.columns] or from [{kind}.codes].")
        codes[norm_code(c)] = str(target)
    if not codes:
        raise UnusableExport(f"{source}: [{kind}.codes] is empty; list the instrument codes of the file, "
                             "e.g. \"44261-6\" = \"phq9\".")
    special = {_norm(code), *(_norm(v) for v in value)}
    clash = special & set(cols)
    if clash:
        raise UnusableExport(f"{source}: '{min(clash)}' is both a code/value column and in [{kind}.columns]; "
                             "keep it in one place.")
    return LongLayout(code=_norm(code), value=tuple(_norm(v) for v in value), codes=codes,
                      id=_norm(spec["id"]) if spec.get("id") else None)


# ------------------------------------------------------------------------------------------------------------
# TOML writing (a small subset: the structure above)
# ------------------------------------------------------------------------------------------------------------

def _q(text: str) -> str:
    return json.dumps(str(text), ensure_ascii=False)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(v.item() if hasattr(v, "item") else v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, AbcMapping):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    return _q(v)


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", str(k)) else _q(k)


def dumps_toml(data: dict, *, header: str = "") -> str:
    """Write a preset/mapping dict as TOML (tables of tables; a value map's tables stay inline)."""
    lines: list[str] = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []

    def emit(table: AbcMapping, path: list[str]) -> None:
        plain = {k: v for k, v in table.items() if not isinstance(v, AbcMapping) or _inline(path, k)}
        nested = {k: v for k, v in table.items() if k not in plain}
        if path and (plain or not nested):
            lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        quoted = len(path) >= 2 and path[1] in ("columns", "codes", "values")
        for k, v in plain.items():  # headers, values and codes are always quoted
            lines.append(f"{_q(k) if quoted else _key(k)} = {_scalar(v)}")
        for k, v in nested.items():
            emit(v, [*path, k])

    emit(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


def _inline(path: list[str], key: str) -> bool:
    """Inside ``<kind>.values.<column>`` a table is one value's targets: written inline."""
    return len(path) == 3 and path[1] == "values"


# ------------------------------------------------------------------------------------------------------------
# finding and loading presets
# ------------------------------------------------------------------------------------------------------------

def _preset_files() -> list[Path]:
    return [p for p in sorted(PRESET_DIR.glob("*.toml")) if not p.name.startswith("_")]


def available_presets() -> dict[str, str]:
    """Preset name → description, for pickers and ``--preset`` help."""
    out = {}
    for path in _preset_files():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        out[path.stem] = str(data.get("description", ""))
    return out


def load_preset(name: str | None) -> Preset:
    if name is None or name == "canonical":
        name = "canonical"
    path = PRESET_DIR / f"{name}.toml"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or not path.exists():
        raise UnusableExport(f"There is no column preset called '{name}'; choose one of: "
                             f"{', '.join(available_presets())}.")
    return Preset.from_dict(tomllib.loads(path.read_text(encoding="utf-8")), source=path.name)


MAX_MAPPING_BYTES = 1_000_000  # a mapping of every column and value of three exports is a few kilobytes
MAX_MAPPING_DEPTH = 5  # [kind.values.column] value = {column = text}: the text sits 5 levels down


def _depth(obj: Any, limit: int) -> int:
    """How deeply tables and lists nest in ``obj`` (stops counting past ``limit``)."""
    todo, deepest = [(obj, 0)], 0
    while todo:
        item, d = todo.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        if isinstance(item, dict):
            todo.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            todo.extend((v, d + 1) for v in item)
    return deepest


def _shape_error(data: dict, source: str) -> str | None:
    """The first setting of a mapping with the wrong type (a list where a table belongs…), as a sentence."""
    def kind_of(v: Any) -> str:
        return {dict: "a table", list: "a list", str: "text", bool: "true/false", int: "a number",
                float: "a number"}.get(type(v), f"a {type(v).__name__}")

    if _depth(data, MAX_MAPPING_DEPTH) > MAX_MAPPING_DEPTH:
        return f"{source} nests tables or lists more than {MAX_MAPPING_DEPTH} deep; a mapping has only " \
               "[kind], [kind.columns], [kind.values.column] and [kind.long] sections. Save the mapping again."
    for key in ("name", "description", "dates"):
        if key in data and not isinstance(data[key], str):
            return f"{source}: {key} must be text, not {kind_of(data[key])}."
    for kind in COLUMNS:
        section = data.get(kind, {})
        if not isinstance(section, dict):
            return f"{source}: [{kind}] must be a table of settings, not {kind_of(section)}."
        checks: list[tuple[str, Any, type, type | tuple[type, ...], str]] = [
            (f"[{kind}.columns]", section.get("columns", {}), dict, str, "text"),
            (f"[{kind}.values]", section.get("values", {}), dict, dict, "a table"),
            (f"[{kind}.codes]", section.get("codes", {}), dict, str, "text"),
            (f"[{kind}.scale]", section.get("scale", {}), dict, (int, float), "a number"),
            (f"[{kind}.items]", section.get("items", {}), dict, list, "a list of column names"),
            (f"[{kind}.long]", section.get("long", {}), dict, (str, list), "text or a list of text"),
            (f"{kind}.keep_identifiers", section.get("keep_identifiers", []), list, str, "text")]
        for where, value, container, member, wanted in checks:
            if not isinstance(value, container):
                return (f"{source}: {where} must be {'a table' if container is dict else 'a list'}, "
                        f"not {kind_of(value)}.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if not isinstance(v, member):
                    return f"{source}: {where} entry {k!r} must be {wanted}, not {kind_of(v)}."
        for col, mapping in section.get("values", {}).items():
            for key, target in mapping.items():
                if isinstance(target, dict):
                    bad = [t for t, x in target.items() if not isinstance(x, str)]
                    if bad:
                        return (f"{source}: [{kind}.values.{col}] '{key}' sets {bad[0]} to {kind_of(target[bad[0]])}; "
                                "give text.")
                elif not isinstance(target, str):
                    return f"{source}: [{kind}.values.{col}] '{key}' must be text or a table, not {kind_of(target)}."
        long = section.get("long", {})
        for key in ("code", "id"):
            if key in long and not isinstance(long[key], str):
                return f"{source}: [{kind}.long] {key} must be text, not {kind_of(long[key])}."
        value = long.get("value", [])
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            return f"{source}: [{kind}.long] value must be text or a list of text."
    return None


def _parse_mapping(text: str, source: str) -> Preset:
    """TOML text → Preset, every problem one :class:`UnusableExport` sentence (never another exception)."""
    if len(text) > MAX_MAPPING_BYTES:
        raise UnusableExport(f"The mapping file {source} is {len(text):,} characters long; a mapping is a few "
                             "kilobytes. Choose the .toml file that the Data page saved.")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UnusableExport(f"The mapping file {source} is not valid TOML ({err}); fix it or save it again.") from None
    except RecursionError:
        raise UnusableExport(f"The mapping file {source} nests lists or tables too deeply to be a mapping; "
                             "save the mapping again.") from None
    problem = _shape_error(data, source)
    if problem:
        raise UnusableExport(problem)
    try:
        return Preset.from_dict(data, source=source)
    except UnusableExport:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as err:
        raise UnusableExport(f"The mapping file {source} has a setting of the wrong type ({type(err).__name__}); "
                             "save the mapping again from the Data page.") from None


def load_mapping_file(path: str | Path) -> Preset:
    """A user's saved column mapping (same format as a preset); any problem is one sentence (UnusableExport)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_MAPPING_BYTES:
            raise UnusableExport(f"The mapping file {p.name} is {p.stat().st_size:,} bytes; a mapping is a few "
                                 "kilobytes. Choose the .toml file that the Data page saved.")
        with p.open("rb") as fh:
            raw = fh.read(MAX_MAPPING_BYTES + 1)
        return _parse_mapping(raw.decode("utf-8"), p.name)
    except FileNotFoundError:
        raise UnusableExport(f"The mapping file {p} was not found; check the path.") from None
    except IsADirectoryError:
        raise UnusableExport(f"{p} is a folder, not a mapping file; give the path of the .toml file.") from None
    except UnicodeDecodeError:
        raise UnusableExport(f"The mapping file {p.name} is not a text file; save the mapping again.") from None
    except PermissionError:
        raise UnusableExport(f"The mapping file {p} cannot be read (permission denied); check its "
                             "permissions.") from None
    except OSError as err:
        raise UnusableExport(f"The mapping file {p} cannot be read ({err.strerror}); check the path.") from None


def loads_mapping(text: str, *, source: str = "mapping.toml") -> Preset:
    """A mapping from TOML text (an uploaded mapping file); any problem is one sentence (UnusableExport)."""
    return _parse_mapping(text, source)


def combine_presets(base: Preset | str | None, overrides: AbcMapping[str, Preset], *,
                    name: str | None = None) -> Preset:
    """One preset for all files: ``base``'s sections, with each kind in ``overrides`` taken from its preset.

    The Data page uses it when one file needed a mapping and the others follow a preset; saving the result
    gives one mapping file for ``--mapping``.
    """
    base_preset = base if isinstance(base, Preset) else load_preset(base)
    data = copy.deepcopy(base_preset.data) or {"name": base_preset.name}
    for kind, preset in overrides.items():
        if kind not in COLUMNS:
            raise UnusableExport(f"Unknown export kind '{kind}'; use sessions, followups or patients.")
        section = preset.data.get(kind)
        if section:
            data[kind] = copy.deepcopy(section)
        else:
            data.pop(kind, None)
    data["name"] = name or (base_preset.name if not overrides else f"{base_preset.name}+mapping")
    if dates := next((p.dates for p in overrides.values() if p.dates), None):  # the date format is saved too
        data["dates"] = dates
    parts = [base_preset.description] + [p.description for p in overrides.values() if p.description]
    data["description"] = "; ".join(d for d in parts if d)
    return Preset.from_dict(data, source=data["name"])
