"""Header names: their normal form, and whether a header names a direct identifier (dropped on read)."""

from __future__ import annotations

import re

_IDENTIFIER_PATTERNS = [
    r"(^|_)(first|last|given|family|full|middle|sur|fore|patient|client|preferred)_?name($|_)",
    r"^name$", r"^surname$", r"^forename$",
    r"(^|_)e_?mail($|_)", r"(^|_)(phone|telephone|mobile|cell|fax)(_?(number|no))?($|_)",
    r"(^|_)(address|street|addr|city|zip|zipcode|postcode|postal_code)($|_)",
    r"(^|_)(ssn|social_security(_number)?|sin|nhs_?(number|no)?|nino|passport|driver_?licen[cs]e)($|_)",
    r"(^|_)(dob|date_of_birth|birth_?date|birthdate|birthday)($|_)",
    r"(^|_)(mrn|medical_record(_number)?|record_number|chart_number|health_card)($|_)",
    r"(^|_)(insurance|member|policy|medicaid|medicare)_?(id|number|no)($|_)",
    r"(^|_)(ip_address|device_id|url|photo)($|_)",
]
_IDENTIFIER_RE = re.compile("|".join(_IDENTIFIER_PATTERNS))


def normalise_header(name: str) -> str:
    """``' Session Date '`` → ``session_date`` (trim, lower-case, runs of non-alphanumerics → ``_``)."""
    s = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    return s


def looks_like_identifier(header: str) -> bool:
    return bool(_IDENTIFIER_RE.search(normalise_header(header)))

