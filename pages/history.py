"""Upload history: earlier uploads from the store; reopen one, compare two, delete (admin), audit log (admin)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from analytics.errors import OutcomesError
from analytics.privacy.access import ADMIN_ROLES, ROW_LEVEL_ROLES, STORE_ROLES
from analytics.privacy.counts import mask_text
from analytics.privacy.safe_export import to_safe_csv
from analytics.privacy.suppression import SuppressedTable, suppress_counts
from analytics.store import STORE_FILE, Store, compare_uploads, data_dir, open_store
from pages._auth import current_user
from pages._shared import set_exports, settings, sidebar_settings

sidebar_settings()
st.header("Upload history")
st.write("Every accepted upload is kept in the clinic's store (accepted rows and the data-quality report; the "
         "files themselves and identifier columns are never kept). Reopen one to see it on every page, or compare "
         "two periods.")
user, role = current_user()
suppress = settings().suppress
if done := st.session_state.pop("hist_done", None):
    st.success(done)


def _store() -> Store | None:
    try:
        if not (data_dir() / STORE_FILE).exists():  # viewing the page never creates a store
            return None
        return open_store()
    except OutcomesError as err:
        st.warning(str(err))
        st.stop()


def _suppressed_comparison(table: pd.DataFrame, *, enabled: bool) -> SuppressedTable:
    """Suppress the comparison: each column's patient partition and sessions are additive; "in both" is shared."""
    blocks = {"patients": "patients", "patients in both": "patients", "patients only in this upload": "patients",
              "sessions": "sessions", "ketamine sessions": "sessions", "follow-ups": "follow-ups"}
    t = table[["metric", "a", "b"]].assign(block=table["metric"].map(blocks),
                                           total=table["metric"].isin(["patients", "sessions", "follow-ups"]))
    out = suppress_counts(t, count_columns=["a", "b"], margin=("total", True), by=["block"], enabled=enabled)
    both = out.table["metric"] == "patients in both"
    if enabled and out.mask.loc[both, "a"].any() != out.mask.loc[both, "b"].any():
        # the shared count is hidden on one side only: the other side would give it away; hide the block
        block = (t["block"] == "patients").to_numpy()
        mask = out.mask.copy()
        mask.loc[block, ["a", "b"]] = True
        shown = out.table.copy()
        shown.loc[block, ["a", "b"]] = pd.NA
        out = dataclasses.replace(out, table=shown, mask=mask)
    return out


store = _store()
records = store.list_uploads() if store is not None else []
if not records:
    st.info("No uploads stored yet. Uploads accepted on the **Data** page are kept here.")
    st.stop()

listing = pd.DataFrame([r.summary() for r in reversed(records)])
listing["created_at"] = listing["created_at"].map(lambda t: f"{t:%Y-%m-%d %H:%M} UTC")
listing["patients"] = listing["patients"].map(lambda n: mask_text(n, enabled=suppress))
if role not in ROW_LEVEL_ROLES:  # row and issue counts are exact only for roles that see the rows themselves
    for c in [c for c in listing.columns if c.endswith("_rows") or c == "issues"]:
        listing[c] = listing[c].map(lambda n: mask_text(n))
st.dataframe(listing, hide_index=True, width="stretch", key="hist_table")
ids = [r.upload_id for r in reversed(records)]
labels = {r.upload_id: f"{r.created_at:%Y-%m-%d %H:%M} · {r.user} · {r.upload_id}" for r in records}

st.subheader("Reopen an upload")
owners = {r.upload_id: r.user for r in records}
reopenable = [i for i in ids if role in STORE_ROLES or owners[i] == user]  # a director: their own uploads only
if not reopenable:
    st.caption(f"As {role} you can reopen only uploads you made yourself, and none of these is yours; ask a "
               "clinician, analyst or admin for the figures of an upload.")
else:
    chosen = st.selectbox("Upload", reopenable, format_func=labels.get, key="hist_open")
    if st.button("Reopen on every page", key="hist_reopen", type="primary"):
        try:
            set_exports(store.load_validated(chosen), "stored")  # type: ignore[union-attr]
        except OutcomesError as err:
            st.warning(str(err))
        else:
            st.session_state["hist_opened"] = chosen
    if st.session_state.get("hist_opened") in reopenable:
        st.success(f"Every page now shows upload {st.session_state['hist_opened']}.")

st.subheader("Compare two uploads")
if len(ids) < 2:
    st.caption("Two stored uploads are needed to compare periods.")
else:
    c1, c2 = st.columns(2)
    a = c1.selectbox("Earlier (a)", ids, index=1, format_func=labels.get, key="hist_a")
    b = c2.selectbox("Later (b)", ids, index=0, format_func=labels.get, key="hist_b")
    try:
        comparison = compare_uploads(store, a, b)  # type: ignore[arg-type]
    except OutcomesError as err:
        st.warning(str(err))
    else:
        shown = _suppressed_comparison(comparison.table, enabled=suppress)
        text = shown.text()[["metric", "a", "b"]]
        both_shown = ~shown.mask["a"] & ~shown.mask["b"]
        text["change (b − a)"] = [mask_text(d, enabled=False) if ok else "—"
                                  for d, ok in zip(comparison.table["change"], both_shown)]
        st.dataframe(text, hide_index=True, width="stretch", key="hist_compare")
        for u, (first, last) in comparison.periods.items():
            if pd.notna(first):
                st.caption(f"{u}: sessions from {first:%Y-%m-%d} to {last:%Y-%m-%d}.")
        for note in shown.notes:
            st.caption(note)

if role not in ADMIN_ROLES:
    st.stop()
st.subheader("Delete (admin)")
d1, d2 = st.columns(2)
with d1:
    gone = st.selectbox("Upload to delete", ids, format_func=labels.get, key="hist_del")
    sure = st.checkbox("I understand this deletes the upload and its rows for good", key="hist_del_sure")
    if st.button("Delete this upload", key="hist_delete", disabled=not sure):
        n = store.delete_upload(gone, user)  # type: ignore[union-attr]
        st.session_state["hist_done"] = f"Deleted upload {gone} ({n:,} stored rows). The audit log records it."
        st.rerun()
with d2:
    pid = st.text_input("Patient number (patient_id) to delete from every upload", key="hist_pid")
    if st.button("Delete this patient's data", key="hist_delete_patient", disabled=not pid.strip()):
        n = store.delete_patient(pid, user)  # type: ignore[union-attr]
        st.session_state["hist_done"] = (f"Deleted {n:,} stored rows of that patient. The audit log records the "
                                         f"deletion under a reference, not the patient number.")
        st.rerun()

st.subheader("Audit log (admin)")
audit = store.audit_log(limit=500)  # type: ignore[union-attr]
st.dataframe(audit, hide_index=True, width="stretch", key="hist_audit")
if st.download_button("Download the audit log (CSV)", data=lambda: to_safe_csv(audit),  # made on the click only
                      file_name="kap-outcomes-audit.csv", mime="text/csv", key="hist_audit_dl"):
    store.log_export(user, "audit log (CSV download)")  # type: ignore[union-attr]
