"""The pages' one import (``from app_pages import _common as ui``): it gathers the app's plumbing, which lives in
one module per responsibility. Everything about models, data, attacks and defenses lives in ``backdoor_core``;
these modules only keep Streamlit state and draw.

* ``_state``   — session-state keys, widgets that keep their value across pages, the Report's finding log;
* ``_data``    — the session's dataset (cached) and uploaded files;
* ``_models``  — the current model: shared cached models, per-session copies, locks, the zoo, the model/data gate;
* ``_jobs``    — background jobs: start, poll, cancel, ``on_finish``, and their results kept for a reload;
* ``_widgets`` — messages, styles, charts, page headers;
* ``_sidebar`` — the sidebar on every page.
"""

from app_pages._data import (SessionTemp, _load_dataset, data_label, data_spec, dataset, dataset_or_none,
                             discard_upload, hub_id_refusal, local_folder, save_upload, server_files_allowed,
                             server_files_refusal, session_tmp, set_data_spec, upload_error)
from app_pages._jobs import (cancelled_note, clear_job, drop_result, get_job, handle_finished_jobs, job_panel, jobs,
                             keep_result, start)
from app_pages._models import (FOLDER_REFERENCE, NO_REFERENCE, clean_references, current_model, default_ref,
                               labels_problem, load_ref, model_lock, model_ref, require_model_and_data, require_rows,
                               session_copy, session_models, set_session_model, set_shared_model, shared_model,
                               zoo_dir, zoo_entries, zoo_table)
from app_pages._sidebar import sidebar, sidebar_jobs
from app_pages._state import (ASSETS, DEFAULT_DATA, K_DATA, K_JOBS, K_MODEL, K_SESSION, K_SESSION_MODELS, K_TMP,
                              POLL_SECONDS, ROOT, TEST_DATA_ENV, TEST_MODEL_ENV, keep, kept, lab, set_kept, ss,
                              test_model_name)
from app_pages._widgets import (flip_line, inject_css, page_header, plot, points_delta, show_error, stack_columns,
                               tile_columns, trigger_text_html)

__all__ = [
    "ASSETS", "DEFAULT_DATA", "K_DATA", "K_JOBS", "K_MODEL", "K_SESSION", "K_SESSION_MODELS", "K_TMP",
    "FOLDER_REFERENCE", "NO_REFERENCE", "POLL_SECONDS", "ROOT", "SessionTemp", "TEST_DATA_ENV", "TEST_MODEL_ENV",
    "_load_dataset", "cancelled_note", "clean_references", "hub_id_refusal", "local_folder",
    "server_files_allowed", "server_files_refusal",
    "clear_job", "current_model", "data_label", "data_spec", "flip_line", "dataset", "dataset_or_none",
    "default_ref", "discard_upload", "drop_result",
    "get_job", "handle_finished_jobs", "inject_css", "job_panel", "jobs", "keep", "keep_result",
    "kept", "lab", "labels_problem", "load_ref", "model_lock", "model_ref", "page_header", "plot", "points_delta",
    "require_model_and_data", "require_rows", "save_upload", "session_copy", "session_tmp", "session_models",
    "set_data_spec", "set_kept",
    "set_session_model", "set_shared_model", "shared_model", "show_error", "sidebar", "sidebar_jobs", "ss", "start",
    "test_model_name", "trigger_text_html", "upload_error", "zoo_dir", "zoo_entries", "zoo_table",
]
