"""Upload history: earlier uploads from the store; reopen one, compare two, delete (admin), audit log (admin)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics.errors import OutcomesError
from analytics.formatting import escape_markdown
from analytics.privacy.access import ADMIN_ROLES, ROW_LEVEL_ROLES, STORE_ROLES
from analytics.privacy.counts import mask_text
from analytics.privacy.safe_export import to_safe_csv
from analytics.privacy.suppression import (
    COMPLEMENT_MARK,
    issue_counts,
    suppress_cells,
    suppress_upload_comparison,
    upload_patient_texts,
)
from analytics.store import STORE_FILE, Store, UploadRecord, compare_uploads, data_dir, open_store
from pages._auth import current_user
from pages._shared import set_exports, settings, show_table
from pages._sidebar import sidebar_settings
from schemas.frames import FileReport

sidebar_settings()
st.header("Upload history")
st.write("Every accepted upload is kept in the clinic's store (accepted rows and the data-quality report; the "
         "files themselves and identifier columns are never kept). Reopen one to see it on every page, or compare "
         "two periods.")
user, role = current_user()
suppress = settings().suppress
if done := st.session_state.pop("hist_done", None):
    st.success(escape_markdown(done))


def _store() -> Store | None:
    try:
        if not (data_dir() / STORE_FILE).exists():  # viewing the page never creates a store
            return None
        return open_store()
    except OutcomesError as err:
        st.warning(escape_markdown(str(err)))
        st.stop()


def _row_texts(store: Store, record: UploadRecord, *, min_cell: int) -> dict[str, str]:
    """One upload's stored rows per file and its problem count, suppressed together with the rows read / accepted /
    set aside that the Data page shows for the same upload (``file_count_cells``' relations; the problem total as
    ``issue_counts`` shows it), so that no cell shown here gives away one hidden there."""
    report = store.load_report(record.upload_id)
    files = {}
    for kind, fr in (report.get("files") or {}).items():
        try:
            files[kind] = FileReport(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in fr.items()})
        except TypeError:  # a report from another version: its stored rows are then suppressed on their own
            continue
    values: dict[object, float | None] = {}
    sums: list[tuple[list[object], object]] = []
    for kind, rep in files.items():
        values.update({("rows", kind): rep.rows, ("accepted", kind): rep.accepted, ("aside", kind): rep.quarantined,
                       ("out", kind): rep.output_rows, ("merged", kind): rep.merged})
        sums.append(([("accepted", kind), ("aside", kind)], ("rows", kind)))
        if rep.long_format:
            sums.append(([("out", kind), ("merged", kind)], ("accepted", kind)))
    stored = {}
    for kind, n in record.row_counts.items():
        rep = files.get(kind)
        same = ("out" if rep.long_format else "accepted", kind) if rep is not None else None
        if same is not None and values[same] == n:
            stored[kind] = same  # the number the Data page shows: one cell
        else:  # rows deleted since (or no report): part of what was accepted, the deleted rest protected
            stored[kind] = ("stored", kind)
            values[("stored", kind)] = n
            if same is not None:
                sums.append(([("stored", kind)], same))
    cells = suppress_cells(values, sums=sums, min_cell=min_cell)
    problems = issue_counts(report["issues"], min_cell=min_cell)["problems"]
    return {**{f"{kind}_rows": cells.text(key) for kind, key in stored.items()},
            "issues": problems.iloc[-1] if len(problems) else "0"}


store = _store()
records = store.list_uploads() if store is not None else []
if not records:
    st.info("No uploads stored yet. Uploads accepted on the **Data** page are kept here.")
    st.stop()

listing = pd.DataFrame([r.summary() for r in reversed(records)])
listing["created_at"] = listing["created_at"].map(lambda t: f"{t:%Y-%m-%d %H:%M} UTC")
min_cell = settings().min_cell
# the patients table has one row per patient: its row count is a patient count too, under the same rule
people = upload_patient_texts([((r.upload_id, c), n) for r in records for c, n in (
    ("patients", r.n_patients), ("patients_rows", r.row_counts.get("patients"))) if n is not None],
    min_cell=min_cell, enabled=suppress)
if role not in ROW_LEVEL_ROLES:  # row and issue counts are exact only for roles that see the rows themselves
    texts = pd.DataFrame([_row_texts(store, r, min_cell=min_cell) for r in reversed(records)])  # type: ignore[arg-type]
    for c in [c for c in listing.columns if c.endswith("_rows") or c == "issues"]:
        listing[c] = texts[c] if c in texts else listing[c].map(lambda n: mask_text(n, min_cell=min_cell))
listing["patients"] = [people[(i, "patients")] for i in listing["upload_id"]]
if suppress and "patients_rows" in listing:
    listing["patients_rows"] = [t if t in (mask_text(1, min_cell=min_cell), COMPLEMENT_MARK)
                                else people.get((i, "patients_rows"), "—")
                                for i, t in zip(listing["upload_id"], listing["patients_rows"])]
show_table(listing, hide_index=True, width="stretch", key="hist_table")
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
            st.warning(escape_markdown(str(err)))
        else:
            st.session_state["hist_opened"] = chosen
    if st.session_state.get("hist_opened") in reopenable:
        st.success(escape_markdown(f"Every page now shows upload {st.session_state['hist_opened']}."))

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
        st.warning(escape_markdown(str(err)))
    else:
        shown = suppress_upload_comparison(comparison.table, enabled=suppress)
        text = shown.text()[["metric", "a", "b"]]
        both_shown = ~shown.mask["a"] & ~shown.mask["b"]
        text["change (b − a)"] = [mask_text(d, enabled=False) if ok else "—"
                                  for d, ok in zip(comparison.table["change"], both_shown)]
        show_table(text, hide_index=True, width="stretch", key="hist_compare")
        for u, (first, last) in comparison.periods.items():
            if pd.notna(first):
                st.caption(escape_markdown(f"{u}: sessions from {first:%Y-%m-%d} to {last:%Y-%m-%d}."))
        for note in shown.notes:
            st.caption(escape_markdown(note))

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
show_table(audit, hide_index=True, width="stretch", key="hist_audit")
if st.download_button("Download the audit log (CSV)", data=lambda: to_safe_csv(audit),  # made on the click only
                      file_name="kap-outcomes-audit.csv", mime="text/csv", key="hist_audit_dl"):
    store.log_export(user, "audit log (CSV download)")  # type: ignore[union-attr]
