"""Reading one export file as the data contract says, before any validation.

What happens here, in order:

1. Refuse what is not a CSV text file (size limit, compressed or binary content, absurd line length or
   column count) with one sentence; nothing is parsed.
2. Decode: UTF-8 with or without BOM; else Windows-1252 (the decision is reported). Line breaks written as
   CR only (old Mac exports) are read as lines.
3. Sniff the delimiter (``,`` ``;`` tab) from the header line.
4. Split into records; every record keeps its ``line`` as an editor shows it (header = line 1). Records
   with the wrong number of fields are set aside as issues, never dropped; the issue gives their field
   count, never their text (a name with an unquoted comma would otherwise be stored). A double quote that
   is never closed refuses the file with the line that opened it.
5. Normalise headers (trim, case-insensitive), apply the preset's column renames and value maps, drop
   direct-identifier columns (reported, never stored). A value map entry may set two columns (a visit
   type that names the route); a disagreement with the file's own column sets the row aside, and so does a
   NUL character in a kept column. Issue values are cut to their first characters, and never show a column
   filled from an identifier-looking header (kept on purpose by a mapping).
6. A long file (the preset has ``[followups.long]``: one row per completed questionnaire) is pivoted into
   follow-up rows per patient and day by :mod:`schemas.long_format`; every source row is accounted for.

A Parquet file (:func:`is_parquet`) skips steps 1–4: its columns are read with pyarrow and written as text, as a
CSV export of the same table would hold them (``line`` = row + 1, its line in that CSV). Several files of one kind
(one per year or site) are read one by one and stacked into one export by :func:`read_exports`, which refuses a
file whose columns differ from the first file's and keeps each row's file for the issues.

Values stay text here; :mod:`schemas.validate` parses and checks them.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from schemas.arrow import map_columns, release_unused_memory, text_array, text_series
from schemas.columns import COLUMNS, REQUIRED, read_columns
from schemas.errors import UnusableExport
from schemas.frames import HIDDEN_VALUE, VALUE_CHARS, FileReport, clip_text
from schemas.headers import looks_like_identifier, normalise_header
from schemas.long_format import CODE, VALUE, pivot_long
from schemas.presets import Preset, load_preset

MAX_BYTES = 512 * 1024 * 1024
MAX_COLUMNS = 500
MAX_LINE_CHARS = 100_000
MISSING_TOKENS = frozenset({"", "na", "n/a", "null", "-", "none", "nan"})
# Several files of one kind read as one (:func:`read_exports`): a row's ``line`` is (file number + 1) * LINE_STRIDE +
# its line in its own file, until the issues are written (:meth:`RawExport.explain_issues` names file and line)
LINE_STRIDE = 10**12
_LONG_LINE = re.compile(r"(?<![\d.])(\d{13,})(?![\d.])")

# Header tokens that mark a direct identifier (HIPAA Safe Harbor style). Matched on whole tokens of
# the normalised header, so ``site`` or ``session_type`` never match.

@dataclass(frozen=True)
class RawExport:
    """One file after reading: text values in canonical columns, plus what was set aside.

    ``frame`` holds one row per well-formed record, text values (missing tokens → ``None``), canonical
    column names where known, and ``line``. ``issues`` are records set aside while reading (one per
    record): rows that could not be split into the header's columns, value-map conflicts, and the source
    rows of a long file that could not become part of a follow-up. ``rows`` counts every record read.

    A long file (one row per questionnaire, ``long_format``) is pivoted while reading: ``frame`` then has
    one row per patient and day, its ``line`` the first source line of that follow-up, and ``sources``
    says where every source row that was not set aside went: ``line`` (source line), ``followup_line``
    (the follow-up's ``line``), ``column`` (the canonical column it fills), ``duplicate`` (True for an
    identical repeat merged into another row).

    ``identifier_columns``: canonical columns filled from a header that looks like a direct identifier (kept
    on purpose by a mapping's ``keep_identifiers``); issues never show their values.
    """

    kind: str
    name: str
    frame: pd.DataFrame
    rows: int
    issues: list[dict] = field(default_factory=list)
    dropped_columns: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    long_format: bool = False
    sources: pd.DataFrame | None = None
    identical_duplicates: int = 0
    identifier_columns: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()  # several files of one kind read as one (:func:`read_exports`): their names

    def source_of(self, line: int) -> tuple[str, int]:
        """(file name, line as an editor shows it) of a row's ``line`` (several files: see :func:`read_exports`)."""
        if not self.parts or line < LINE_STRIDE:
            return self.name, int(line)
        return self.parts[int(line) // LINE_STRIDE - 1], int(line) % LINE_STRIDE

    def report(self, accepted: pd.DataFrame) -> FileReport:
        """Counts for the data-quality report, given the accepted rows (with ``line``) of this file.

        For a long file, ``accepted`` counts the source rows that went into accepted follow-ups (so
        ``accepted + quarantined = rows`` holds in source rows) and ``merged`` the accepted source rows that
        did not start a follow-up of their own (``accepted - merged`` = accepted follow-up rows).
        """
        if self.sources is None:
            n = len(accepted)
            return FileReport(rows=self.rows, accepted=n, quarantined=self.rows - n,
                              dropped_columns=self.dropped_columns, extra_columns=self.extra_columns)
        ok = self.sources["followup_line"].isin(accepted["line"].to_numpy())
        n_src = int(ok.sum())
        return FileReport(rows=self.rows, accepted=n_src, quarantined=self.rows - n_src,
                          dropped_columns=self.dropped_columns, extra_columns=self.extra_columns,
                          merged=n_src - len(accepted), long_format=True)

    def explain_issues(self, issues: pd.DataFrame) -> pd.DataFrame:
        """Point validation issues of a pivoted follow-up at the source lines (no-op for other files).

        An issue about one measure moves to the line that gave that measure; every issue names the other
        source lines of the follow-up, which are set aside with it.
        """
        if self.sources is None or issues.empty:
            return self._localise(issues)
        src = self.sources
        mine = issues["file"].eq(self.name) & issues["line"].isin(src["followup_line"].to_numpy())
        if not mine.any():
            return issues
        out = issues.copy()
        src = src[src["followup_line"].isin(out.loc[mine, "line"].to_numpy())]
        cell = src.drop_duplicates(["followup_line", "column"]).set_index(["followup_line", "column"])["line"]
        keys = pd.MultiIndex.from_arrays([out.loc[mine, "line"].astype("int64"), out.loc[mine, "column"]])
        moved = pd.Series(cell.reindex(keys).to_numpy(), index=out.index[mine])
        lines_of = src.groupby("followup_line")["line"].agg(lambda s: sorted(s.tolist()))
        new_line = moved.fillna(out.loc[mine, "line"]).astype("int64")
        reasons = []
        for idx, line in new_line.items():
            others = [x for x in lines_of.get(int(out.at[idx, "line"]), []) if x != line]
            extra = "" if not others else (
                f" (this follow-up also holds line{'s' if len(others) > 1 else ''} "
                f"{_list_lines(others)}, set aside with it)")
            reasons.append(str(out.at[idx, "reason"]) + extra)
        out.loc[mine, "reason"] = reasons
        out.loc[mine, "line"] = new_line.to_numpy()
        return self._localise(out)

    def _localise(self, issues: pd.DataFrame) -> pd.DataFrame:
        """Issues of several files read as one: each names its own file and line (also where a reason quotes the
        line of another row, e.g. the first copy of a duplicate: ``line 12 of sessions_2024.csv``)."""
        if not self.parts or issues.empty:
            return issues
        mine = issues["file"].eq(self.name).to_numpy()
        if not mine.any():
            return issues
        out = issues.copy()
        lines = out.loc[mine, "line"].to_numpy(dtype="int64")
        part = lines // LINE_STRIDE - 1
        names = np.asarray(self.parts, dtype=object)
        out.loc[mine, "file"] = names[part]
        out.loc[mine, "line"] = lines % LINE_STRIDE
        out["line"] = out["line"].astype("int64")
        out.loc[mine, "reason"] = [_LONG_LINE.sub(functools.partial(self._quoted_line, own=own), str(r))
                                   for r, own in zip(out.loc[mine, "reason"], names[part])]
        return out

    def _quoted_line(self, m: re.Match[str], own: str) -> str:
        line = int(m.group(1))
        if not LINE_STRIDE <= line < (len(self.parts) + 1) * LINE_STRIDE:
            return m.group(0)
        name, local = self.source_of(line)
        return f"{local}" if name == own else f"{local} of {name}"


def _list_lines(lines: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(x) for x in lines[:limit])
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def _refuse_hostile(data: bytes, name: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise UnusableExport(
            f"{name} is {len(data) / 1e6:,.0f} MB, above the {max_bytes / 1e6:,.0f} MB limit for one upload; "
            "export a shorter date range or split the file by year.")
    head = data[:4]
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"BZh")):
        raise UnusableExport(
            f"{name} is a compressed archive, not a CSV file; unzip it and upload the CSV inside.")
    sample = data[:65536]
    if b"\x00" in sample:
        if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise UnusableExport(
                f"{name} is saved as UTF-16; save it again as 'CSV UTF-8' (or Windows-1252) and upload that.")
        raise UnusableExport(
            f"{name} is a binary file (for example a spreadsheet), not a CSV text file; "
            "save it as CSV (comma, semicolon or tab separated) and upload that.")


def _decode(data: bytes, name: str) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "UTF-8 (with BOM)"
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "Latin-1 (not valid UTF-8 or Windows-1252; check accented letters)"


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: 0 for d in (",", ";", "\t")}
    in_quotes = False
    for ch in header_line:
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _split_fast(data: bytes | memoryview, delimiter: str, n_lines: int) -> tuple[list[str], pd.DataFrame] | None:
    """pyarrow parse of UTF-8 bytes; only when every record is exactly one physical line (line = index + 2).

    Every column is read as text (no type inference: the contract's types are applied in validation). Arrow's
    parser turns the missing tokens into missing values as it splits (in parallel, no pass of our own); a column
    with a value that starts or ends with white space is cleaned afterwards by :func:`_missing_to_none` (trim,
    then tokens), so ``" NA "`` is missing too.
    """
    bad: list[int] = []

    def handler(_row: object) -> str:
        bad.append(1)
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),  # the caller's bytes, not a copy
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, block_size=_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler,
                                             newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=True,
                                                 null_values=_MISSING_LIST, column_types=_ALL_TEXT),
        )
    except (pa.ArrowInvalid, pa.ArrowException):
        return None
    if bad or table.num_rows != n_lines:
        return None
    if _last_line_opens_a_quote(data, delimiter):
        return None  # Arrow ends the value at the end of the file; the general path names the line instead
    table = table.cast(pa.schema([pa.field(f.name, pa.large_string()) for f in table.schema]))
    cells = list(table.slice(0, 1).to_pylist()[0].values())
    if any(c is None for c in cells):  # a header cell that reads as a missing token ("" or "NA"): as written
        head = bytes(data[:MAX_LINE_CHARS * 4 + 2])
        stop = head.find(b"\n")
        first = (head[:stop] if stop >= 0 else head).decode("utf-8").rstrip("\r")
        cells = next(csv.reader([first], delimiter=delimiter), [])
        if len(cells) != table.num_columns:
            return None
    header = [str(v) for v in cells]
    rest = table.slice(1)
    body = rest.to_pandas()
    body.columns = range(len(header))
    edged = {i: body[i] for i in range(len(header)) if _edge_space(rest.column(i))}
    for i, col in _missing_to_none_all(edged).items():
        body[i] = col
    body.insert(0, "__line", np.arange(2, len(body) + 2, dtype="int64"))
    return header, body


def _last_line_opens_a_quote(data: bytes | memoryview, delimiter: str) -> bool:
    """True when the file's last line opens a double quote that the file never closes (only that line is read: a
    quote opened on an earlier line and not closed on it makes Arrow's row count differ from the line count)."""
    tail = bytes(data[-(4 * MAX_LINE_CHARS + 2):])
    last = tail[tail.rfind(b"\n") + 1:]
    if b'"' not in last:
        return False
    return _runaway_quote(last.decode("utf-8", errors="replace"), delimiter) is not None


def _offsets_and_bytes(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """A string or large_string array's value offsets (one more than its values; value i is
    ``chars[offsets[i]:offsets[i + 1]]``) and character bytes, read from Arrow's own buffers without a copy; None for
    another layout."""
    if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
        return None
    buffers = chunk.buffers()
    if buffers[1] is None:  # an empty array may have no offsets buffer
        return np.zeros(len(chunk) + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    width = 8 if pa.types.is_large_string(chunk.type) else 4
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if width == 8 else np.int32, count=len(chunk) + 1,
                            offset=chunk.offset * width)
    chars = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    return offsets, chars


def _edge_space(column: pa.ChunkedArray) -> bool:
    """True when some value of the text column may start or end with white space (conservative: any byte
    below ``!`` or a non-ASCII byte at either end of a value counts), read from Arrow's own buffers."""
    for chunk in column.chunks:
        if chunk.null_count == len(chunk):
            continue
        layout = _offsets_and_bytes(chunk)
        if layout is None:
            return True  # another layout: cleaned, to be safe
        offsets, chars = layout
        if chars.size == 0:
            continue
        if not np.any((chars[offsets[0]:offsets[-1]] - np.uint8(33)) >= 95):
            continue  # no byte of any value is white space or non-ASCII: one contiguous pass, 3× faster than the ends
        last = chars.size - 1  # a missing value has no characters: its neighbours' are looked at instead
        ends = np.concatenate((chars[np.minimum(offsets[:-1], last)], chars[np.maximum(offsets[1:] - 1, 0)]))
        if np.any((ends - np.uint8(33)) >= 95):  # uint8 wraps below 33: true for < 33 and for ≥ 128
            return True
    return False


# large_string: the Arrow type of pandas' text columns, so the table becomes a frame without a copy of its text
_ALL_TEXT = {f"f{i}": pa.large_string() for i in range(MAX_COLUMNS + 1)}
# Arrow parses blocks in parallel; a block must hold a whole line, and longer lines than MAX_LINE_CHARS are refused
# before the split, so 1 MiB blocks are safe (16 MiB blocks left a 50 MB export to 3 threads: 2× slower)
_BLOCK_BYTES = 1 << 20
assert _BLOCK_BYTES > 4 * MAX_LINE_CHARS  # a UTF-8 character is at most 4 bytes


def _delimiter_words(delimiter: str) -> str:
    return {",": "comma (,)", ";": "semicolon (;)", "\t": "tab"}.get(delimiter, repr(delimiter))


def _wrong_field_count(line: int, n_fields: int, n_header: int, delimiter: str) -> dict:
    """The issue of a record that does not split into the header's columns.

    Its fields cannot be matched to columns (a name with an unquoted comma shifts the birth date into the next
    column), so no field of it is shown: the value says only how many fields it has.
    """
    if n_fields > n_header:
        what = (f"a value contains the delimiter, a {_delimiter_words(delimiter)}, without quotes (for example a "
                "name written as last name, first name); put double quotes around every value that contains the "
                "delimiter, or remove the extra delimiter, then export again")
    else:
        what = ("some delimiters are missing (a cut-off line, or a stray double quote that joined two values); "
                "complete the line or remove the stray quote, then export again")
    return {"line": line, "column": "(whole row)", "value": f"{n_fields} fields (header has {n_header})",
            "reason": f"this line has {n_fields} fields but the header has {n_header}: {what}"}


_QUOTED = re.compile(r'"[^"]*+(?:""[^"]*+)*+"')


def _runaway_quote(text: str, delimiter: str, limit: int | None = None) -> int | None:
    """Offset of the double quote that opens a value and is never closed (or, with ``limit``, is closed only after
    more than ``limit`` characters), by the csv module's rules: a quote opens a value only as its first character,
    ``""`` inside it is a quote, and what follows the closing quote up to the next delimiter joins the value."""
    rest = re.compile(f"[^{re.escape(delimiter)}\r\n]*+")
    pos, n = 0, len(text)
    while pos < n:
        if text[pos] == '"':
            m = _QUOTED.match(text, pos)
            if m is None or (limit is not None and m.end() - pos > limit):
                return pos
            pos = m.end()
        pos = rest.match(text, pos).end()  # type: ignore[union-attr]
        if pos < n:
            pos += 2 if text.startswith("\r\n", pos) else 1
    return None


def _unclosed_quote_line(lines: list[str], first_line: int, delimiter: str, limit: int | None = None) -> int | None:
    """Editor line of the runaway quote in one record's physical ``lines`` (the first is ``first_line``)."""
    text = "".join(lines)
    if '"' not in text:
        return None
    at = _runaway_quote(text, delimiter, limit)
    if at is None:
        return None
    seen = 0
    for i, physical in enumerate(lines):
        seen += len(physical)
        if at < seen:
            return first_line + i
    return first_line + len(lines) - 1


def _unclosed_quote(name: str, line: int, detail: str = "") -> UnusableExport:
    return UnusableExport(
        f"{name}: the double quote (\") opened on line {line} is never closed{detail}, so everything after it would "
        f"be read as one value; close or remove that quote on line {line} and save the file again.")


def _last_lines(text: str, n: int) -> list[str]:
    """The last ``n`` physical lines of ``text`` with their line breaks (LF, CRLF or CR, as csv's line_num counts)."""
    has_cr = "\r" in text
    out: list[str] = []
    pos = len(text)
    while pos and len(out) < n:
        k = pos
        if text[k - 1] == "\n":
            k -= 2 if k >= 2 and text[k - 2] == "\r" else 1
        elif text[k - 1] == "\r":
            k -= 1
        begin = max(text.rfind("\n", 0, k), text.rfind("\r", 0, k) if has_cr else -1) + 1
        out.append(text[begin:pos])
        pos = begin
    return out[::-1]


def _lines_from(text: str, line: int, chars: int) -> list[str]:
    """Physical lines of ``text`` from editor line ``line`` on, until they hold more than ``chars`` characters."""
    out: list[str] = []
    held = 0
    for physical in itertools.islice(io.StringIO(text, newline=""), line - 1, None):
        out.append(physical)
        held += len(physical)
        if held > chars:
            break
    return out


def _split_slow(text: str, delimiter: str, name: str,
                skipped: dict[str, list] | None = None) -> tuple[list[str], pd.DataFrame, list[dict], int]:
    """csv module parse keeping each record's first physical line; ragged records become issues.

    A quote that is never closed swallows the rest of the file into the last record (csv gives no error for it),
    or makes a value longer than the field limit: either way the file is refused with the line that opened it.
    """
    limit = MAX_LINE_CHARS * 10
    csv.field_size_limit(limit)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    header: list[str] | None = None
    records: list[list[str]] = []
    lines: list[int] = []
    issues: list[dict] = []
    n = 0
    start = 1
    last = (1, 0)  # first and last physical line of the last record
    try:
        for rec in reader:
            line = start
            start = reader.line_num + 1
            if header is None:
                if not rec or all(not c.strip() for c in rec):
                    continue
                header = rec
                last = (line, reader.line_num)
                continue
            if not rec or all(not c.strip() for c in rec):
                if skipped is not None:
                    skipped["blank"].append(line)
                continue  # a blank line (or a row of delimiters only) is not a record
            last = (line, reader.line_num)
            if skipped is not None:
                label = next((c.strip() for c in rec if c.strip()), "")
                if _FOOTER.match(label):
                    skipped["footer"].append((line, label))
                    continue  # a report's total line is not a record
            n += 1
            if len(rec) != len(header):
                issues.append(_wrong_field_count(line, len(rec), len(header), delimiter))
                continue
            records.append(rec)
            lines.append(line)
    except csv.Error as err:
        opened = _unclosed_quote_line(_lines_from(text, start, limit + 1), start, delimiter, limit)
        if opened is not None:
            raise _unclosed_quote(name, opened, f" (its value runs on for more than {limit:,} characters)") from None
        raise UnusableExport(f"{name} could not be split into columns near line {start} ({err}); "
                             "check its quoting and save it again as CSV.") from None
    if last[1]:
        tail = _last_lines(text, reader.line_num - last[0] + 1)
        opened = _unclosed_quote_line(tail[:last[1] - last[0] + 1], last[0], delimiter)
        if opened is not None:
            raise _unclosed_quote(name, opened)
    if header is None:
        raise UnusableExport(f"{name} is empty; export it again with a header row and data.")
    body = pd.DataFrame(records, columns=range(len(header)), dtype=object) if records else \
        pd.DataFrame(columns=range(len(header)), dtype=object)
    body.insert(0, "__line", lines)
    return header, body, issues, n


@dataclass(frozen=True)
class RawTable:
    """A CSV file split into records, before any column naming (for the mapping step).

    ``frame`` has the file's headers as written (trimmed; a repeated header gets `` (2)``) and ``line``;
    every value is text or ``None`` (missing tokens).
    """

    name: str
    headers: tuple[str, ...]
    frame: pd.DataFrame
    rows: int
    issues: list[dict] = field(default_factory=list)
    notes: tuple[str, ...] = ()


def _content_end(u8: np.ndarray) -> int:
    """Length of the file without its trailing line breaks (CR and LF)."""
    end = len(u8)
    while end and u8[end - 1] in (10, 13):
        end -= 1
    return end


def _one_record_per_line(u8: np.ndarray, breaks: np.ndarray) -> bool:
    """True when the file has no blank line inside and no carriage return other than in CRLF endings.

    Then every record is one physical line (unless a quoted field holds a line break, which the fast
    split detects by its row count), so a record's editor line is its index + 2.
    """
    end = _content_end(u8)
    inner = breaks[breaks < end]
    crlf = inner[inner > 0][u8[inner[inner > 0] - 1] == 13]
    if np.count_nonzero(u8[:end] == 13) != len(crlf):
        return False  # a lone CR (old Mac line ending or a stray CR in a value)
    starts = np.concatenate(([0], inner + 1))
    stops = np.concatenate((inner, [end]))
    length = stops - starts
    blank = (length == 0) | ((length == 1) & (u8[np.minimum(starts, end - 1)] == 13))
    return not bool(blank.any())


def _line_feeds(data: bytes, start: int, end: int) -> int:
    """``data.count(b"\\n", start, end)``, counted by NumPy in 16 MiB slices (3× faster on a GB file; a slice's
    comparison is the only temporary)."""
    u8 = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    step = 1 << 24
    return sum(int(np.count_nonzero(u8[at:at + step] == 10)) for at in range(0, len(u8), step))


def _common_case(data: bytes) -> tuple[list[str], pd.DataFrame, str, str] | None:
    """Steps 2–4 for the common file, without decoding it in Python: UTF-8 (Arrow checks every value as it parses),
    line feeds only, every line at most ``MAX_LINE_CHARS`` bytes, one record per line (no blank line, no line break
    inside a value: Arrow's row count then equals the line count). (header, body, encoding, delimiter), or None:
    the general path decides, and gives the sentences for what it refuses."""
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    end = len(data)
    while end > start and data[end - 1] == 10:
        end -= 1
    if end == start or b"\r" in data:
        return None
    stop = data.find(b"\n", start, end)
    try:
        first = data[start:stop if stop >= 0 else end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not first.strip() or len(first) > MAX_LINE_CHARS:
        return None
    delimiter = _sniff_delimiter(first)
    if first.count(delimiter) + 1 > MAX_COLUMNS:
        return None
    # a line longer than MAX_LINE_CHARS would hold a whole aligned block of half that length without a line feed
    half = MAX_LINE_CHARS // 2
    if any(data.find(b"\n", at, at + half) < 0 for at in range(start, end - half + 1, half)):
        return None
    fast = _split_fast(memoryview(data)[start:end], delimiter, _line_feeds(data, start, end) + 1)
    if fast is None:
        return None
    return fast[0], fast[1], "UTF-8 (with BOM)" if start else "UTF-8", delimiter


_FOOTER = re.compile(r"(?i)^\s*(?:(?:grand|sub)[\s-]*)?totals?\b|^\s*(?:end of (?:report|file)|record count|row count)\b")
_FOOTER_ARROW = r"(?i)^\s*(?:(?:grand|sub)[\s-]*)?totals?\b|^\s*(?:end of (?:report|file)|record count|row count)\b"
_BANNER_LINES = 30  # a header row is looked for on the first lines of a file


@functools.lru_cache(maxsize=1)
def _known_headers() -> frozenset[str]:
    """Normalised headers that mark a header row: the contract's columns, every preset's headers, the synonyms."""
    import tomllib

    from schemas.presets import PRESET_DIR, available_presets

    known = {c for kind in COLUMNS for c in read_columns(kind)}
    for preset in available_presets():
        p = load_preset(preset)
        for kind in COLUMNS:
            known.update(k for k, v in p.column_map(kind).items() if v != "extra")
    syn = tomllib.loads((PRESET_DIR / "_synonyms.toml").read_text(encoding="utf-8"))
    for kind in syn.get("fields", {}).values():
        for spellings in kind.values():
            known.update(normalise_header(x) for x in spellings)
    known.discard("")
    return frozenset(known)


def _header_score(line: str, known: frozenset[str]) -> int:
    best = 0
    for d in (",", ";", "\t"):
        if d not in line:
            continue
        cells = next(csv.reader([line], delimiter=d), [])
        best = max(best, len({normalise_header(c) for c in cells} & known))
    return best


def _skip_banner(data: bytes, preset: Preset | None) -> tuple[bytes, int, list[str]]:
    """Lines before the header row (a report's title, "printed on …"): (data from the header on, lines skipped,
    the skipped lines). The header is the first of the first lines that names at least two known columns; when the
    first line does, or no line does, nothing is skipped."""
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    head = data[len(bom):len(bom) + 65536]
    if b"\n" not in head:
        return data, 0, []
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        text = head[:err.start].decode("utf-8") if err.start > len(head) - 8 else head.decode("cp1252", errors="replace")
    lines = text.split("\n")[:_BANNER_LINES]
    known = _known_headers()
    if preset is not None:
        known = known | {k for kind in COLUMNS for k, v in preset.column_map(kind).items() if v != "extra"}
    first = _header_score(lines[0].rstrip("\r"), known)
    if first >= 2:
        return data, 0, []
    for i, line in enumerate(lines[1:-1], start=1):
        if _header_score(line.rstrip("\r"), known) >= max(2, first + 1):
            cut = 0
            for _ in range(i):
                cut = head.index(b"\n", cut) + 1
            skipped = [x.rstrip("\r") for x in lines[:i]]
            return bom + data[len(bom) + cut:], i, skipped
    return data, 0, []


# the first byte of a value _FOOTER_ARROW can match: white space, the first letter of grand, sub, total, end, record
# or row in either case, or any non-ASCII byte (case folding: U+017F long s matches s)
_FOOTER_FIRST = np.zeros(256, dtype=bool)
_FOOTER_FIRST[:33] = _FOOTER_FIRST[128:] = True
_FOOTER_FIRST[list(b"gsterGSTER")] = True


def _may_be_footer(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """False where a text value cannot be a report's total line (:data:`_FOOTER_ARROW`): its first byte, read from
    Arrow's buffers, cannot start a match (an ID column of digits or codes: the expression then runs on no row; a
    missing or empty value is looked at through its neighbour's byte and may be kept, which only costs time)."""
    out = []
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        layout = _offsets_and_bytes(chunk)
        if layout is None or layout[1].size == 0:  # another layout, or no characters: every value is kept
            out.append(np.ones(len(chunk), dtype=bool))
            continue
        offsets, chars = layout
        out.append(_FOOTER_FIRST[chars[np.minimum(offsets[:-1], chars.size - 1)]])
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def _drop_non_records(body: pd.DataFrame, n_cols: int) -> tuple[pd.DataFrame, list[int], list[tuple[int, str]]]:
    """Rows that are no records: every value missing (a row of delimiters), or a report's total line (``TOTAL``,
    ``Grand total``, ``Total: 42`` as its first value). (body without them, their lines, footer lines and labels).
    Arrow kernels on the first column; the other columns only for rows whose first value is missing."""
    import pyarrow.compute as pc

    if not len(body) or not n_cols:
        return body, [], []
    first = text_array(body[0])
    missing = np.asarray(pc.is_null(first).to_numpy(zero_copy_only=False), dtype=bool)
    footer = np.zeros(len(body), dtype=bool)
    maybe = np.flatnonzero(_may_be_footer(first))  # the regular expression only where it can match
    if maybe.size:
        footer[maybe] = np.asarray(pc.fill_null(pc.match_substring_regex(first.take(maybe), _FOOTER_ARROW), False)
                                   .to_numpy(zero_copy_only=False), dtype=bool)
    blank = np.zeros(len(body), dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        sub = body.iloc[rows]
        label = pc.coalesce(*[text_array(sub[i]) for i in range(n_cols)]) if n_cols > 1 else text_array(sub[0])
        blank[rows] = np.asarray(pc.is_null(label).to_numpy(zero_copy_only=False), dtype=bool)
        footer[rows] = np.asarray(pc.fill_null(pc.match_substring_regex(label, _FOOTER_ARROW), False)
                                  .to_numpy(zero_copy_only=False), dtype=bool)
    drop = blank | footer
    if not drop.any():
        return body, [], []
    lines = body["__line"].to_numpy()
    footers = []
    for pos in np.flatnonzero(footer):
        row = body.iloc[pos]
        footers.append((int(lines[pos]), next(str(row[i]) for i in range(n_cols) if row[i] is not None
                                              and not pd.isna(row[i]))))
    return body[~drop].reset_index(drop=True), [int(x) for x in lines[blank]], footers


def _non_record_notes(name: str, banner: list[str], header_line: int, blank: list[int],
                      footers: list[tuple[int, str]]) -> list[str]:
    """One note each for a banner, empty rows and footer rows (never one issue per line)."""
    notes = []
    if banner:
        shown = " | ".join(clip_text(x.strip()) for x in banner if x.strip()) or "empty lines"
        notes.append(f"{name}: line{'s 1–' + str(len(banner)) if len(banner) > 1 else ' 1'} before the header row "
                     f"(line {header_line}) {'are' if len(banner) > 1 else 'is'} a report banner, skipped: {shown}.")
    if blank:
        notes.append(f"{name}: {len(blank):,} empty row(s) skipped (line{'s' if len(blank) > 1 else ''} "
                     f"{_list_lines(blank)}); they hold no values and are not counted as rows.")
    if footers:
        shown = "; ".join(f"line {line}: '{clip_text(label, 40)}'" for line, label in footers[:5])
        more = f" and {len(footers) - 5} more" if len(footers) > 5 else ""
        notes.append(f"{name}: {len(footers):,} total/footer row(s) of a report skipped ({shown}{more}); they are "
                     "not records and are not counted as rows.")
    return notes


def _records(source: str | Path | bytes, *, label: str, name: str | None, max_bytes: int,
             preset: Preset | None = None) -> tuple[str, list[str], pd.DataFrame, list[dict], int, list[str], bool]:
    """Steps 1–4 of the module docstring: (name, header, body, issues, rows, notes, has_nul).

    ``body`` has ``__line`` and one text column per header position, values trimmed, missing tokens missing.
    ``has_nul``: the file holds a NUL byte (after the first 64 KiB; one there refuses the file as binary), so some
    value does; :func:`_set_aside_nul` finds it. Line breaks written as CR only (old Mac exports) are read as lines."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise UnusableExport(
                    f"{name} is {size / 1e6:,.0f} MB, above the {max_bytes / 1e6:,.0f} MB limit for one upload; "
                    "export a shorter date range or split the file by year.")
            data = path.read_bytes()
        except FileNotFoundError:
            raise UnusableExport(f"{name} was not found at {path}; check the path and try again.") from None
        except IsADirectoryError:
            raise UnusableExport(f"{path} is a folder, not a CSV file; give the path of the {label} export.") from None
        except PermissionError:
            raise UnusableExport(f"{name} cannot be read (permission denied); check the file's permissions.") from None
    else:
        data = bytes(source)
        name = name or f"{label}.csv"
    _refuse_hostile(data, name, max_bytes)
    has_nul = data.find(b"\x00") >= 0
    data, offset, banner = _skip_banner(data, preset)
    common = _common_case(data)
    if common is not None:
        header, body, encoding, delimiter = common
        body, blank, footers = _drop_non_records(body, len(header))
        if offset:
            body["__line"] += offset
            blank = [x + offset for x in blank]
            footers = [(x + offset, t) for x, t in footers]
        notes = [_read_note(name, encoding, delimiter)] + _non_record_notes(name, banner, offset + 1, blank, footers)
        return name, header, body, [], len(body), notes, has_nul
    text, encoding = _decode(data, name)
    if not text or text.isspace():
        raise UnusableExport(f"{name} is empty; export it again with a header row and data.")
    cr_only = "\r" in text and "\n" not in text
    if cr_only:  # an old Mac export: every CR ends a line (as an editor shows it)
        text = text.replace("\r", "\n")
    first_nl = text.find("\n")
    first_line = text if first_nl < 0 else text[:first_nl]
    if len(first_line) > MAX_LINE_CHARS:
        raise UnusableExport(f"{name}: the header line is {len(first_line):,} characters long; this is not a "
                             "clinic export. Check that the right file was chosen.")
    delimiter = _sniff_delimiter(first_line)
    if first_line.count(delimiter) + 1 > MAX_COLUMNS:
        raise UnusableExport(f"{name} has {first_line.count(delimiter) + 1:,} columns, more than the "
                             f"{MAX_COLUMNS} a clinic export can have; check that the right file was chosen.")
    if encoding.startswith("UTF-8") and not cr_only:
        utf8 = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    else:
        utf8 = text.encode("utf-8")
    u8 = np.frombuffer(utf8, dtype=np.uint8)
    breaks = np.flatnonzero(u8 == 10)
    longest = int(np.diff(np.concatenate(([-1], breaks, [len(u8)]))).max()) - 1  # bytes ≥ characters
    if longest > MAX_LINE_CHARS:
        raise UnusableExport(f"{name} has a line of {longest:,} characters; a clinic export line is far shorter. "
                             "Check for a missing line break or a stray quote.")
    fast = None
    if _one_record_per_line(u8, breaks):
        end = _content_end(u8)
        n_lines = int(np.searchsorted(breaks, end)) + 1
        fast = _split_fast(memoryview(utf8)[:end], delimiter, n_lines)  # no copy of the file
    del utf8, u8
    issues: list[dict]
    skipped: dict[str, list] = {"blank": [], "footer": []}
    if fast is not None:
        header, body = fast
        issues, rows = [], len(body)
    else:
        header, body, issues, rows = _split_slow(text, delimiter, name, skipped)
        cleaned = _missing_to_none_all({i: body[i] for i in range(len(header))})
        body = pd.DataFrame({"__line": body["__line"], **cleaned})
    body, blank, footers = _drop_non_records(body, len(header))
    rows -= len(blank) + len(footers)
    last = int(body["__line"].max()) if len(body) else 0
    blank = sorted(set(blank) | {x for x in skipped["blank"] if x < last})  # blank lines at the end are no news
    footers = sorted(footers + skipped["footer"])
    if offset:
        body["__line"] += offset
        blank = [x + offset for x in blank]
        footers = [(x + offset, t) for x, t in footers]
    for issue in issues:
        issue["file"] = name
        issue["line"] += offset
    notes = [_read_note(name, encoding, delimiter, cr_only)] + _non_record_notes(name, banner, offset + 1, blank,
                                                                                 footers)
    return name, header, body, issues, rows, notes, has_nul


def _read_note(name: str, encoding: str, delimiter: str, cr_only: bool = False) -> str:
    ends = "; its line breaks are CR only (an old Mac export), read as lines" if cr_only else ""
    return f"{name}: read as {encoding}, delimiter {'tab' if delimiter == chr(9) else repr(delimiter)}{ends}."


def _missing_to_none(values: pd.Series) -> pd.Series:
    """Trim, and turn the contract's missing tokens (``NA``, ``null``, ``-``, empty …) into missing values.

    Done with Arrow compute kernels on the column's own buffers: a million cells in tens of milliseconds.
    """
    import pyarrow.compute as pc

    arr = pc.utf8_trim_whitespace(text_array(values))
    missing = pc.is_in(arr, value_set=_MISSING_SET.cast(arr.type))
    arr = pc.if_else(missing, pa.scalar(None, type=arr.type), arr)
    return text_series(arr, values.index)


def _case_variants(token: str) -> set[str]:
    """Every upper/lower-case spelling of an ASCII token ("na" → na, nA, Na, NA)."""
    return {"".join(c) for c in itertools.product(*[(ch.lower(), ch.upper()) if ch.isalpha() else (ch,)
                                                     for ch in token])}


# matching every case spelling spares a lower-cased copy of each column (the tokens are ASCII)
_MISSING_LIST = sorted(set().union(*(_case_variants(t) for t in MISSING_TOKENS)))
_MISSING_SET = pa.array(_MISSING_LIST, type=pa.string())


def _missing_to_none_all(columns: dict[str, pd.Series]) -> dict[str, pd.Series]:
    """:func:`_missing_to_none` on every text column (not ``line``), columns in parallel threads."""
    names = [c for c in columns if c != "line"]
    out = dict(columns)
    out.update(zip(names, map_columns(lambda c: _missing_to_none(columns[c]), names,
                                      max((len(columns[c]) for c in names), default=0))))
    return out


def read_table(source: str | Path | bytes, *, name: str | None = None, max_bytes: int = MAX_BYTES) -> RawTable:
    """Split a CSV file into text columns named by its own headers (no preset, nothing dropped yet).

    The mapping step uses it to show headers and values before the user has said what they mean.
    """
    name, header, body, issues, rows, notes, _nul = _records(source, label="export", name=name, max_bytes=max_bytes)
    headers: list[str] = []
    for raw_name in header:
        h = raw_name.strip() or f"column {len(headers) + 1}"
        base, k = h, 2
        while h in headers:
            h, k = f"{base} ({k})", k + 1
        headers.append(h)
    out: dict[str, pd.Series] = {"line": body["__line"].astype("int64")}
    out.update({h: body[i] for i, h in enumerate(headers)})
    return RawTable(name=name, headers=tuple(headers), frame=pd.DataFrame(out), rows=rows, issues=issues,
                    notes=tuple(notes))


def read_export(source: str | Path | bytes, *, kind: str, name: str | None = None,
                preset: str | Preset | None = None, dates: str | None = None,
                max_bytes: int = MAX_BYTES) -> RawExport:
    """Read one export into text columns with canonical names.

    Parameters
    ----------
    source:
        A path, or the file's bytes (an upload): a CSV text file, or a Parquet file (:func:`is_parquet`).
    kind:
        ``sessions``, ``followups`` or ``patients``.
    name:
        The file name used in messages (defaults to the path's name or ``<kind>.csv``).
    preset:
        A column preset name (``schemas/presets/*.toml``) or a loaded :class:`Preset` (a saved mapping).
    dates:
        ``iso``, ``dayfirst`` or ``monthfirst``: only used by long files (one row per questionnaire), whose
        rows are grouped by day here. ``None`` groups ISO dates and date-times by their day and leaves other
        date text to :mod:`schemas.validate` unchanged.

    Raises
    ------
    UnusableExport
        Missing, unreadable, empty, hostile file, or a required column missing.
    """
    if kind not in COLUMNS:
        raise UnusableExport(f"Unknown export kind '{kind}'; use sessions, followups or patients.")
    if dates not in (None, "iso", "dayfirst", "monthfirst"):
        raise UnusableExport(f"Unknown date format '{dates}'; use iso, dayfirst or monthfirst.")
    loaded = preset if isinstance(preset, Preset) else load_preset(preset)
    if is_parquet(source):
        name, header, body, rows, notes, has_nul = _parquet_records(source, label=kind, name=name)
        return _name_columns(kind, name, header, body, rows, [], loaded, notes, dates, has_nul=has_nul)
    name, header, body, issues, rows, notes, has_nul = _records(source, label=kind, name=name, max_bytes=max_bytes,
                                                                preset=loaded)
    release_unused_memory()  # what splitting the file allocated and let go
    return _name_columns(kind, name, header, body, rows, issues, loaded, notes, dates, has_nul=has_nul)


Source = str | Path | bytes


def read_exports(sources: Source | Sequence[Source], *, kind: str, names: Sequence[str | None] | str | None = None,
                 preset: str | Preset | None = None, dates: str | None = None,
                 max_bytes: int = MAX_BYTES) -> RawExport:
    """Read one or several files of one kind (one sessions file per year or per site) as one export.

    One source: :func:`read_export` (nothing changes). Several: each is read on its own (CSV or Parquet, with the
    same preset), then they are checked to have the same contract columns after mapping (else
    :class:`UnusableExport` names the file that differs and how) and stacked in the order given. Each row's
    ``line`` becomes ``(file number + 1) * LINE_STRIDE + line``, so that rules across rows (duplicates, a patient's
    rows that must agree) see every file, and :meth:`RawExport.explain_issues` writes each issue with its own file
    and line; ``parts`` holds the file names, ``name`` names them together (for notes and messages).

    ``names``: the file names used in messages (one per source; default: each path's name, or ``<kind>.csv``).
    Two paths with the same name (``2023/sessions.csv``, ``2024/sessions.csv``) are named by their paths.
    """
    many = [sources] if isinstance(sources, (str, Path, bytes, bytearray, memoryview)) else list(sources)
    given = [names] if isinstance(names, str) or names is None else list(names)
    given = given + [None] * (len(many) - len(given)) if len(many) > 1 or given else [None]
    if not many:
        raise UnusableExport(f"No {kind} file was given; give at least one.")
    if len(many) == 1:
        return read_export(many[0], kind=kind, name=given[0], preset=preset, dates=dates, max_bytes=max_bytes)
    labels = _part_names(many, given, kind)
    loaded = preset if isinstance(preset, Preset) else load_preset(preset)
    parts: list[RawExport] = []
    for src, label in zip(many, labels):
        part = read_export(src, kind=kind, name=label, preset=loaded, dates=dates, max_bytes=max_bytes)
        if parts:
            _check_same_columns(parts[0], part, kind)
        parts.append(part)
    return _stack(parts, kind)


EXPORT_SUFFIXES = (".csv", ".txt", ".tsv", ".parquet", ".pq")


def expand_paths(values: Sequence[str | Path], *, kind: str) -> list[Path]:
    """The files named by command-line values for one kind: a path as given, a folder's export files (``.csv``,
    ``.txt``, ``.tsv``, ``.parquet``; sorted by name), or a glob pattern (``sessions_*.csv``; sorted). A folder or
    pattern that finds no file is refused with a sentence; a missing plain path is left to the reader's message."""
    import glob

    out: list[Path] = []
    for value in values:
        path = Path(value)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXPORT_SUFFIXES)
            if not found:
                raise UnusableExport(f"The folder {path} given for {kind} holds no export file (.csv, .tsv, .txt or "
                                     ".parquet); give the files, or the folder that holds them.")
            out += found
        elif not path.exists() and glob.has_magic(str(value)):
            found = sorted(Path(p) for p in glob.glob(str(value)) if Path(p).is_file())
            if not found:
                raise UnusableExport(f"No file matches {value} (given for {kind}); check the pattern and the folder.")
            out += found
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def _part_names(sources: list[Source], given: list[str | None], kind: str) -> list[str]:
    names = []
    for i, (src, name) in enumerate(zip(sources, given)):
        names.append(name or (Path(src).name if isinstance(src, (str, Path)) else f"{kind} file {i + 1}"))
    repeated = {n for n in names if names.count(n) > 1}
    names = [str(src) if n in repeated and isinstance(src, (str, Path)) else n for n, src in zip(names, sources)]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # still the same (two uploads of one name): numbered
        seen[name] = seen.get(name, 0) + 1
        if names.count(name) > 1:
            names[i] = f"{name} ({seen[name]})"
    return names


def _contract_columns(raw: RawExport) -> list[str]:
    return [c for c in raw.frame.columns if c != "line" and not c.startswith("extra:")]


def _check_same_columns(first: RawExport, other: RawExport, kind: str) -> None:
    """Refuse a file of one kind whose contract columns (after mapping) differ from the first file's."""
    a, b = _contract_columns(first), _contract_columns(other)
    if set(a) == set(b) and first.long_format == other.long_format:
        return
    lacks = [c for c in a if c not in b]
    adds = [c for c in b if c not in a]
    how = "; ".join(x for x in (
        f"it has no {', '.join(repr(c) for c in lacks)}" if lacks else "",
        f"it has {', '.join(repr(c) for c in adds)}, which {first.name} has not" if adds else "",
        "one file has one row per questionnaire and the other not" if not (lacks or adds) else "") if x)
    raise UnusableExport(
        f"{other.name} does not have the same columns as {first.name}, the first {kind} file ({how}). Files of one "
        f"kind are read as one export, so they must have the same columns: export them with the same layout (or "
        f"mapping), or load them separately.")


def _joined_name(names: Sequence[str], kind: str) -> str:
    if len(names) <= 3:
        return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
    return f"{names[0]}, {names[1]} and {len(names) - 2} more {kind} files"


def _stack(parts: list[RawExport], kind: str) -> RawExport:
    """Several read files of one kind as one :class:`RawExport` (see :func:`read_exports`); each part's frame is
    released as it is copied in."""
    frames, sources = [], []
    for k, part in enumerate(parts, start=1):
        frame = part.frame
        frame["line"] = frame["line"].to_numpy(dtype="int64") + k * LINE_STRIDE
        frames.append(frame)
        if part.sources is not None:
            src = part.sources.copy()
            src["line"] += k * LINE_STRIDE
            src["followup_line"] += k * LINE_STRIDE
            sources.append(src)
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    frame = pd.concat(frames, ignore_index=True)[columns] if len(frames) > 1 else frames[0]
    del frames
    for part in parts:
        for col in list(part.frame.columns):
            del part.frame[col]
    release_unused_memory()
    names = [p.name for p in parts]
    return RawExport(
        kind=kind, name=_joined_name(names, kind), frame=frame, rows=sum(p.rows for p in parts),
        issues=[i for p in parts for i in p.issues],
        dropped_columns=tuple(dict.fromkeys(c for p in parts for c in p.dropped_columns)),
        extra_columns=tuple(dict.fromkeys(c for p in parts for c in p.extra_columns)),
        notes=tuple(n for p in parts for n in p.notes), long_format=parts[0].long_format,
        sources=pd.concat(sources, ignore_index=True) if sources else None,
        identical_duplicates=sum(p.identical_duplicates for p in parts),
        identifier_columns=tuple(sorted({c for p in parts for c in p.identifier_columns})), parts=tuple(names))


# ------------------------------------------------------------------------------------------------ Parquet files

_PARQUET_MAGIC = b"PAR1"


def is_parquet(source: Source) -> bool:
    """A Parquet file: its name ends ``.parquet``, or its bytes start and end with Parquet's ``PAR1`` mark."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() in (".parquet", ".pq"):
            return True
        try:
            with path.open("rb") as f:
                return f.read(4) == _PARQUET_MAGIC
        except OSError:
            return False
    data = bytes(source[:4]) + bytes(source[-4:]) if len(source) >= 8 else b""
    return data == _PARQUET_MAGIC * 2


def _parquet_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A Parquet column as text, as a CSV export would write it: dates ``yyyy-mm-dd``, date-times ISO (``Z`` when
    in UTC), numbers in their shortest form, booleans ``true``/``false``."""
    import pyarrow.compute as pc

    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = column.type
    if pa.types.is_timestamp(t) and t.tz is not None:
        column = column.cast(pa.timestamp(t.unit, tz="UTC"))
    if pa.types.is_large_string(t):
        return column
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return column.cast(pa.large_string())  # UTF-8 is checked by the cast
    try:
        return pc.cast(column, pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise UnusableExport(f"a column of type {t} cannot be read as text") from None


def _textual(t: pa.DataType) -> bool:
    """False for a Parquet column of numbers, dates, times or booleans (written as text, they hold no NUL byte);
    True for text, bytes and any other type (a dictionary is judged by its values)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                or pa.types.is_temporal(t) or pa.types.is_boolean(t) or pa.types.is_null(t))


def _parquet_records(source: Source, *, label: str, name: str | None
                     ) -> tuple[str, list[str], pd.DataFrame, int, list[str], bool]:
    """A Parquet file as (name, header, body, rows, notes, has_nul), like :func:`_records` gives a CSV file: every
    column as text (the contract's types are applied in validation, as for a CSV), missing tokens missing, and
    ``line`` = row number + 1, the line the row has in the same table written as CSV (header = line 1)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        where: object = path
        if not path.exists():
            raise UnusableExport(f"{name} was not found at {path}; check the path and try again.")
        if path.is_dir():
            raise UnusableExport(f"{path} is a folder, not a file; give the path of the {label} export.")
    else:
        name = name or f"{label}.parquet"
        buffer = pa.py_buffer(bytes(source) if not isinstance(source, bytes) else source)
        where = pa.BufferReader(buffer)
    try:
        pf = pq.ParquetFile(where, memory_map=isinstance(where, Path))
        header = [str(c) for c in pf.schema_arrow.names]
        n_rows = pf.metadata.num_rows
    except PermissionError:
        raise UnusableExport(f"{name} cannot be read (permission denied); check the file's permissions.") from None
    except (pa.ArrowException, OSError) as err:
        raise UnusableExport(f"{name} is not a readable Parquet file ({clip_text(str(err), 120)}); export it again "
                             "(or as CSV).") from None
    if not header:
        raise UnusableExport(f"{name} is empty; export it again with its columns and data.")
    if len(header) > MAX_COLUMNS:
        raise UnusableExport(f"{name} has {len(header):,} columns, more than the {MAX_COLUMNS} a clinic "
                             "export can have; check that the right file was chosen.")
    whole = pf.read() if len(set(header)) < len(header) else None  # repeated names: read at once, by position
    rows = pd.RangeIndex(n_rows)

    def column_text(i: int) -> tuple[pd.Series, bool]:
        """Column ``i`` as text, and whether it holds a NUL byte. Each call opens its own Parquet reader (pyarrow
        does not promise that one may be shared between threads); a few typed columns are in memory at a time (one
        per worker), beside the text ones."""
        h = header[i]
        try:
            own = where if isinstance(where, Path) else pa.BufferReader(buffer)  # one reader per worker
            typed = whole.column(i) if whole is not None else \
                pq.ParquetFile(own, memory_map=isinstance(own, Path)).read(columns=[h]).column(0)
            text = _parquet_text(typed)
        except UnusableExport as err:
            raise UnusableExport(f"{name}: column '{clip_text(h)}' cannot be read ({err}); export it as text, "
                                 "numbers or dates.") from None
        except (pa.ArrowException, OSError) as err:
            raise UnusableExport(f"{name}: column '{clip_text(h)}' cannot be read ({clip_text(str(err), 120)}); "
                                 "export the file again (or as CSV).") from None
        t = typed.type
        del typed
        # numbers, dates and booleans written as text hold no NUL: only the others are searched
        nul = _textual(t) and bool(pc.any(pc.match_substring(text, "\x00")).as_py() or False)
        column = text_series(text, rows)
        del text
        # integers, dates and booleans written as text hold no white space or missing token: nothing to clean
        exact = pa.types.is_integer(t) or pa.types.is_temporal(t) or pa.types.is_boolean(t)
        return (column if exact else _missing_to_none(column)), nul

    # the columns in threads (Arrow's casts and kernels let go of the GIL): at a million patients the 28 columns of
    # the sessions took 12 s one after another, on one core
    converted = map_columns(column_text, range(len(header)), n_rows)
    del whole
    cols: dict[object, pd.Series] = {"__line": pd.Series(np.arange(2, n_rows + 2, dtype="int64"))}
    cols.update({i: column for i, (column, _) in enumerate(converted)})
    has_nul = any(nul for _, nul in converted)
    del converted
    body = pd.DataFrame(cols)
    body, blank, footers = _drop_non_records(body, len(header))
    notes = [f"{name}: read as Parquet; line numbers are those of the same table written as CSV (row + 1)."]
    return name, header, body, len(body), notes + _non_record_notes(name, [], 1, blank, footers), has_nul


def _name_columns(kind: str, name: str, header: list[str], body: pd.DataFrame, rows: int,
                  issues: list[dict], preset: str | Preset | None, notes: list[str],
                  dates: str | None = None, *, has_nul: bool = False) -> RawExport:
    loaded = preset if isinstance(preset, Preset) else load_preset(preset)
    canonical = read_columns(kind)
    renames = loaded.column_map(kind)
    layout = loaded.long_layout(kind)
    special: dict[str, str] = {}
    if layout is not None:
        special[layout.code] = CODE
        special.update({v: f"{VALUE}{i}" for i, v in enumerate(layout.value)})
    out: dict[str, pd.Series] = {"line": body["__line"].astype("int64")}
    dropped: list[str] = []
    extra: list[str] = []
    seen: dict[str, str] = {}
    for i, raw_name in enumerate(header):
        raw_name = raw_name.strip()
        key = normalise_header(raw_name)
        target = special.get(key) or renames.get(key, key)
        if target in canonical or target.startswith((CODE, VALUE)):
            if target in seen:
                what = f"'{target}'" if target in canonical else "the same code/value column"
                raise UnusableExport(
                    f"{name} has two columns that both mean {what} ('{clip_text(seen[target])}' and "
                    f"'{clip_text(raw_name)}'); remove one of them or rename it, then upload again.")
            seen[target] = raw_name
            out[target] = body[i]
        elif looks_like_identifier(raw_name):
            dropped.append(raw_name)
        elif key:
            extra.append(raw_name)
            out[f"extra:{raw_name}"] = body[i]
    frame = pd.DataFrame(out)
    _strip_prefixes(frame, loaded.strip_prefix.get(kind, ()), name, notes)
    window = loaded.window_days.get(kind)
    if window is not None and layout is None:
        frame = _fill_window(frame, window, name, notes)
    shown_as = {target: (raw if target.startswith((CODE, VALUE)) else target) for target, raw in seen.items()}
    shown_as.update({f"extra:{h}": h for h in extra})
    hidden = {shown_as[t] for t, raw in seen.items() if looks_like_identifier(raw)}
    if has_nul:
        frame = _set_aside_nul(frame, name, issues, shown_as)
    as_written = {c: frame[c] for c in frame.columns if c in seen}  # before value maps: what reasons may quote
    frame, conflicts = loaded.apply_values(kind, frame)
    notes.extend(f"{name}: {n}" for n in frame.attrs.pop("notes", []))  # item totals, unit conversions
    if conflicts:
        positions = frame.index.get_indexer([c["index"] for c in conflicts])
        for c, pos in zip(conflicts, positions):
            issues.append({"file": name, "line": int(frame["line"].iloc[pos]), "column": c["column"],
                           "value": c["value"], "reason": c["reason"]})
        frame = frame.drop(index=sorted({c["index"] for c in conflicts})).reset_index(drop=True)
    required = list(REQUIRED[kind])
    if layout is not None:
        required += [CODE] + ([] if any(c.startswith(VALUE) for c in frame.columns) else [f"{VALUE}0"])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        have = ", ".join(clip_text(h.strip()) for h in header[:12]) + (" …" if len(header) > 12 else "")
        hint = "" if loaded.name == "canonical" else f" (preset '{loaded.name}')"
        what = missing[0]
        if what == CODE:
            what = _written(loaded, kind, "code")
            hint += " for the instrument code of each row"
        elif what.startswith(VALUE):
            what = _written(loaded, kind, "value")
            hint += " for the score of each row"
        raise UnusableExport(
            f"{name} has no '{what}' column{hint}; its columns are: {have}. Rename the column in the export, "
            "or choose the preset (or mapping) that matches your system.")
    if dropped:
        notes.append(f"{name}: dropped {len(dropped)} column(s) that look like direct identifiers "
                     f"({', '.join(clip_text(h) for h in dropped)}); they are never stored or analysed.")
    identifiers = tuple(sorted(t for t, raw in seen.items() if t in canonical and looks_like_identifier(raw)))
    if layout is None:
        return RawExport(kind=kind, name=name, frame=frame, rows=rows, issues=_shown(issues, hidden, as_written),
                         dropped_columns=tuple(dropped), extra_columns=tuple(extra), notes=tuple(notes),
                         identifier_columns=identifiers)
    value_headers = [seen.get(f"{VALUE}{i}", v) for i, v in enumerate(layout.value)]
    result = pivot_long(frame, kind=kind, name=name, layout=layout, preset=loaded, dates=dates,
                        code_header=seen[CODE], value_headers=value_headers)
    issues.extend(result.issues)
    notes.extend(result.notes)
    if hidden & {seen.get(f"{VALUE}{i}") for i in range(len(layout.value))}:
        hidden.add(" / ".join(value_headers))  # the column name long_format gives an issue about the value
    return RawExport(kind=kind, name=name, frame=result.frame, rows=rows, issues=_shown(issues, hidden, as_written),
                     dropped_columns=tuple(dropped), extra_columns=tuple(extra), notes=tuple(notes),
                     long_format=True, sources=result.sources, identical_duplicates=result.identical_duplicates,
                     identifier_columns=identifiers)


def _strip_prefixes(frame: pd.DataFrame, prefixes: tuple[str, ...], name: str, notes: list[str]) -> None:
    """Remove a mapping's ``strip_prefix`` (``Patient/``) from the start of patient ids that have it, in place."""
    if not prefixes or "patient_id" not in frame.columns:
        return
    import pyarrow.compute as pc

    arr = text_array(frame["patient_id"])
    total = 0
    for prefix in prefixes:  # longest first
        has = pc.fill_null(pc.starts_with(arr, prefix), False)
        n = int(pc.sum(has).as_py() or 0)
        if n:
            arr = pc.if_else(has, pc.utf8_replace_slice(arr, 0, len(prefix), ""), arr)
            total += n
    if total:
        frame["patient_id"] = text_series(arr, frame.index)
        notes.append(f"{name}: the prefix {' / '.join(repr(p) for p in prefixes)} was removed from {total:,} patient "
                     "id(s), as the mapping says (strip_prefix).")


def _fill_window(frame: pd.DataFrame, window: int, name: str, notes: list[str]) -> pd.DataFrame:
    """The mapping's ``window_days`` for the rows that do not give their own."""
    text = str(int(window))
    if "window_days" in frame.columns:
        empty = frame["window_days"].isna()
        n = int(empty.sum())
        if n:
            frame["window_days"] = frame["window_days"].where(~empty, text)
    else:
        n = len(frame)
        frame["window_days"] = text_series(pa.repeat(pa.scalar(text, pa.large_string()), n), frame.index)
    if n:
        notes.append(f"{name}: window_days = {window} (from the mapping) for {n:,} row(s) that do not give their own: "
                     f"their use questions cover {window} days.")
    return frame


_NUL_REASON = ("contains a NUL character (a zero byte, shown as \u2400), which no export value holds: the file is "
               "damaged on this line. Export the file again, or delete the character in a text editor, then upload "
               "again")
_MAX_REASON_CHARS = 1000


def _set_aside_nul(frame: pd.DataFrame, name: str, issues: list[dict], shown_as: dict[str, str]) -> pd.DataFrame:
    """Set aside the rows with a NUL character in a kept column (one issue per row, at its first such column).

    Only called when the file holds a NUL byte; a NUL in a dropped identifier column does not matter."""
    import pyarrow.compute as pc

    bad = np.zeros(len(frame), dtype=bool)
    first = np.full(len(frame), "", dtype=object)
    for col in frame.columns:
        if col == "line":
            continue
        found = pc.fill_null(pc.match_substring(text_array(frame[col]), "\x00"), False)
        hit = np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool) & ~bad
        first[hit] = col
        bad |= hit
    if not bad.any():
        return frame
    lines = frame["line"].to_numpy()
    for pos in np.flatnonzero(bad):
        col = first[pos]
        issues.append({"file": name, "line": int(lines[pos]), "column": shown_as.get(col, col),
                       "value": str(frame[col].iloc[pos]), "reason": _NUL_REASON})
    return frame[~bad].reset_index(drop=True)


def _long_values(columns: dict[str, pd.Series]) -> list[str]:
    """Distinct values longer than VALUE_CHARS in ``columns`` (longest first): the values a reason may quote."""
    import pyarrow.compute as pc

    found: set[str] = set()
    for values in columns.values():
        arr = text_array(values)
        long = pc.fill_null(pc.greater(pc.utf8_length(arr), VALUE_CHARS), False)
        if pc.any(long).as_py():
            found.update(v for v in pc.unique(pc.filter(arr, long)).to_pylist() if v is not None)
    return sorted(found, key=len, reverse=True)


def _shown(issues: list[dict], hidden: set[str], as_written: dict[str, pd.Series]) -> list[dict]:
    """Issues as they may be stored and shown: no value of an identifier column, long values cut (also where a
    reason quotes them: the long values of ``as_written`` are looked for, only when there are issues), no reason
    longer than _MAX_REASON_CHARS."""
    if not issues:
        return issues
    long_values = _long_values(as_written)
    for issue in issues:
        value = str(issue.get("value", ""))
        if issue.get("column") in hidden and value:
            issue["value"] = HIDDEN_VALUE
        elif len(value) > VALUE_CHARS or "\x00" in value:
            issue["value"] = clip_text(value)
        reason = str(issue.get("reason", ""))
        if len(reason) > VALUE_CHARS:
            for long in long_values:
                if long in reason:
                    reason = reason.replace(long, clip_text(long))
            if len(reason) > _MAX_REASON_CHARS:
                reason = reason[:_MAX_REASON_CHARS] + "\u2026"
        issue["reason"] = reason.replace("\x00", "\u2400")
    return issues



def _written(preset: Preset, kind: str, what: str) -> str:
    """The code/value header as the preset writes it (for messages)."""
    spec = preset.data.get(kind, {}).get("long", {}).get(what)
    if isinstance(spec, list):
        return "' or '".join(str(v) for v in spec)
    return str(spec or what)
