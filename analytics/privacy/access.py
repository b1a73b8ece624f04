"""Who may see what: the app's roles and how a signed-in email gets one (no Streamlit here).

With an ``[auth]`` section in ``.streamlit/secrets.toml`` (OIDC), ``st.login`` gates the app and each signed-in
email gets a role from a ``[roles]`` table::

    [roles]
    "dana@clinic.org" = "admin"          # email = role
    analyst = ["sam@clinic.org"]         # or role = list of emails

Roles (anyone not listed is a ``director``):

* ``director``: aggregates only; the patient list ("Needing attention"), row previews, the issue list with its
  values and the column-mapping step are hidden, small-cell suppression cannot be turned off, an upload is
  checked for the session but never added to the shared upload store, and only the director's own stored
  uploads can be reopened;
* ``clinician``: also sees the patient list for the clinical team's follow-up;
* ``analyst``: also may turn suppression off (internal use);
* ``admin``: also sees the audit log and may delete uploads and patients.

Without ``[auth]`` the app runs locally for one user, ``local``, with the ``admin`` role, and only on an address
of this computer (:func:`serves_this_computer_only`): serving a network needs sign-in.
pages/_auth.py applies these rules in the app (and pages/_gate.py the sign-in gate).
"""

from __future__ import annotations

import importlib.util
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

ROLES = ("director", "clinician", "analyst", "admin")
DEFAULT_ROLE = "director"
LOCAL_USER = ("local", "admin")
ROW_LEVEL_ROLES = ("clinician", "analyst", "admin")      # may see patient-level rows
UNSUPPRESS_ROLES = ("analyst", "admin")                  # may turn small-cell suppression off
ADMIN_ROLES = ("admin",)                                  # audit log, deletion
STORE_ROLES = ROW_LEVEL_ROLES                            # may add uploads to the shared store, reopen anyone's
PAGE_ROLES = {"attention": ROW_LEVEL_ROLES}              # url_path → roles that see the page
SIGN_IN_PACKAGES = ("authlib", "httpx")                  # what st.login needs (Streamlit's ``auth`` extra)


def role_for(email: str, table: Mapping[str, Any] | None) -> str:
    """The role of ``email`` in a ``[roles]`` table (either ``email = role`` or ``role = [emails]``).

    Emails compare case-insensitively; an unknown role name or an unlisted email gives ``director``.
    """
    key = email.strip().lower()
    if not key or not table:
        return DEFAULT_ROLE
    found: list[str] = []
    for k, v in table.items():
        if isinstance(v, str) and str(k).strip().lower() == key:
            found.append(v.strip().lower())
        elif isinstance(v, Sequence) and not isinstance(v, str) and \
                key in {str(e).strip().lower() for e in v}:
            found.append(str(k).strip().lower())
    valid = [r for r in found if r in ROLES]
    return max(valid, key=ROLES.index) if valid else DEFAULT_ROLE


def missing_sign_in_packages() -> list[str]:
    """The packages ``st.login`` needs that this installation lacks (empty when sign-in can work)."""
    return [name for name in SIGN_IN_PACKAGES if importlib.util.find_spec(name) is None]


def serves_this_computer_only(address: str | None) -> bool:
    """True when a server bound to ``address`` (Streamlit's ``server.address``) is reachable from this computer only.

    Loopback addresses (``127.0.0.0/8``, ``::1``) and ``localhost`` are; an unset or empty address (every
    interface), ``0.0.0.0``, ``::``, any other address or host name, and a Unix socket (made for a proxy in front)
    are not. Without sign-in the app may only be served on the first kind.
    """
    host = (address or "").strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # empty, a host name or unix://…: cannot be shown to be this computer only
        return False
