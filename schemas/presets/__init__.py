"""Column presets: how other export layouts map onto the canonical columns.

A preset is a TOML data file beside this module (``<name>.toml``)::

    name = "ehr-encounters"
    description = "Generic EHR encounter export"
    [sessions.columns]          # export header → canonical column
    "Encounter Date" = "session_date"
    [sessions.values.route]     # export value → canonical value (case-insensitive)
    "Intravenous" = "iv"

Headers and values are matched after trimming and lower-casing, so a preset lists each spelling once.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analytics.errors import UnusableExport
from schemas.columns import COLUMNS, read_columns

PRESET_DIR = Path(__file__).parent


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str = ""
    columns: dict[str, dict[str, str]] = field(default_factory=dict)   # kind → {normalised header: canonical}
    values: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # kind → col → {value: canonical}

    def column_map(self, kind: str) -> dict[str, str]:
        return self.columns.get(kind, {})

    def map_values(self, kind: str, frame: pd.DataFrame) -> pd.DataFrame:
        for col, mapping in self.values.get(kind, {}).items():
            if col in frame.columns and mapping:
                low = frame[col].str.lower()
                mapped = low.map(mapping)
                frame[col] = mapped.where(mapped.notna(), frame[col])
        return frame

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "preset") -> "Preset":
        columns: dict[str, dict[str, str]] = {}
        values: dict[str, dict[str, dict[str, str]]] = {}
        for kind in COLUMNS:
            section = data.get(kind, {})
            cols = {}
            for header, target in section.get("columns", {}).items():
                if target not in read_columns(kind):
                    raise UnusableExport(f"{source}: '{header}' maps to '{target}', which is not a {kind} column; "
                                         f"use one of: {', '.join(read_columns(kind))}.")
                cols[_norm(header)] = target
            columns[kind] = cols
            values[kind] = {col: {str(k).strip().lower(): str(v) for k, v in m.items()}
                            for col, m in section.get("values", {}).items()}
        return cls(name=str(data.get("name", source)), description=str(data.get("description", "")),
                   columns=columns, values=values)


def available_presets() -> dict[str, str]:
    """Preset name → description, for pickers and ``--preset`` help."""
    out = {}
    for path in sorted(PRESET_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        out[path.stem] = str(data.get("description", ""))
    return out


def load_preset(name: str | None) -> Preset:
    if name is None or name == "canonical":
        name = "canonical"
    path = PRESET_DIR / f"{name}.toml"
    if not re.fullmatch(r"[a-z0-9_-]+", name) or not path.exists():
        raise UnusableExport(f"There is no column preset called '{name}'; choose one of: "
                             f"{', '.join(available_presets())}.")
    return Preset.from_dict(tomllib.loads(path.read_text(encoding="utf-8")), source=path.name)


def load_mapping_file(path: str | Path) -> Preset:
    """A user's saved column mapping (same format as a preset)."""
    p = Path(path)
    try:
        return Preset.from_dict(tomllib.loads(p.read_text(encoding="utf-8")), source=p.name)
    except FileNotFoundError:
        raise UnusableExport(f"The mapping file {p} was not found; check the path.") from None
    except tomllib.TOMLDecodeError as err:
        raise UnusableExport(f"The mapping file {p.name} is not valid TOML ({err}); fix it or save it again.") from None
