"""Header names: their normal form, and whether a header names a direct identifier (dropped on read).

A header is matched on whole tokens of its normal form (``' Birth Dt '`` → ``birth_dt``), so ``site``,
``session_type`` or ``sex_at_birth`` never match. It is also matched with camelCase and trailing digits split
off (``dateOfBirth`` → ``date_of_birth``, ``Email1`` → ``email_1``, ``Addr1`` → ``addr_1``) and with ``#`` read as
"number" (``Chart #`` → ``chart_number``, while ``Patient #`` stays a patient number).

The rules follow HIPAA Safe Harbor's list (names, contact details, street address, dates of birth, record,
account and card numbers, device ids, photos) plus the people around a patient (guardian, emergency contact)
and free text (notes, comments), which holds all of these. A bare ``Patient`` header holds the patient's name
in EHR reports (``Doe, Jane``); ``Patient ID``, ``Patient Number``, ``Patient #`` do not match. ``Client`` is
left alone (some systems use it for the client number).
"""

from __future__ import annotations

import re

_NUMBER = r"(_?(number|no|num|nbr|id))?"
_IDENTIFIER_PATTERNS = [
    # names
    (r"(^|_)(first|last|given|family|full|middle|maiden|legal|nick|preferred|sur|fore|patient|client|pt|person"
     r"|member|guardian|parent|mother|father|spouse|contact|kin|f|l|m)_?names?($|_)"),
    r"^(full_)?names?($|_)", r"(^|_)initials($|_)", r"^patient$",
    # contact details
    r"(^|_)e_?mail(_?address)?s?($|_)",
    r"(^|_)(tele?phone|phone|tel|mobile|cell|cellphone|fax|pager)" + _NUMBER + r"($|_)",
    r"(^|_)contact_?(number|no|num|phone|details|info)($|_)",
    r"(^|_)(address|addresses|addr|street|city|town|zip|zipcode|zip_code|postcode|post_code|postal_code)($|_)",
    # national and card numbers
    (r"(^|_)(ssn|ss_?(number|no|num)|soc(ial)?_?sec(urity)?" + _NUMBER + r"|sin|nhs" + _NUMBER
     + r"|nino|passport" + _NUMBER + r"|driver_?s?_?licen[cs]e" + _NUMBER + r"|national_?id)($|_)"),
    # birth
    r"(^|_)(dob|d_o_b|date_?of_?birth|dt_of_birth|birth_?(date|dt|day|d)|birthdate|birthday|born_on)($|_)",
    # record, chart, account and insurance numbers
    (r"(^|_)(mrn|medical_?record" + _NUMBER + r"|med_?rec" + _NUMBER + r"|record_?(number|no|num|nbr)"
     r"|chart" + _NUMBER + r"|health_?card" + _NUMBER + r"|(emr|ehr|hospital)_?(number|no|num|id))($|_)"),
    r"(^|_)(account|acct)" + _NUMBER + r"($|_)",
    r"(^|_)(insurance|member|policy|medicaid|medicare|subscriber|beneficiary)_?(id|number|no|num|nbr)($|_)",
    # devices, web, images
    r"(^|_)(ip_address|mac_address|device_id|serial_?(number|no)|url|website|photo|photograph|picture)($|_)",
    # the people around a patient
    r"(^|_)(guardian|next_of_kin|nok|emergency|spouse|caregiver|responsible_party|guarantor)($|_)",
    # free text
    r"(^|_)(notes?|comments?|remarks?|narrative|free_?text|memo)($|_)",
]
_IDENTIFIER_RE = re.compile("|".join(_IDENTIFIER_PATTERNS))


def normalise_header(name: str) -> str:
    """``' Session Date '`` → ``session_date`` (trim, lower-case, runs of non-alphanumerics → ``_``)."""
    s = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    return s


def _forms(header: str) -> tuple[str, str]:
    """The header's normal form, and the same with camelCase and trailing digits split (``#`` = number)."""
    text = str(header).replace("#", " number ")
    split = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])", "_", text)
    return normalise_header(text), normalise_header(split)


def looks_like_identifier(header: str) -> bool:
    """True when the header names a direct identifier (name, contact, address, birth date, record number, …)."""
    return any(_IDENTIFIER_RE.search(form) for form in _forms(header))
