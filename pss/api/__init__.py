"""The engine facade used by the CLI, the app and notebooks (plain values in, plain values out).

The app (``pss_app``) imports ``pss.api`` and its submodules only (plus ``pss.errors`` and ``pss.config``), so what
it needs of the engine's shared pieces is named here too: atomic writes (``pss.fileio``), run and job states
(``pss.status``) and the run store's record type.
"""
from __future__ import annotations

from pss.api.data import (CLASS_NAMES, DEFAULT_WORKSPACE, IGNORE_INDEX, NUM_CLASSES, THUMB_SIZE, VOC_PALETTE,
                          DatasetStatistics, ImageRecord, UserCollection, Workspace, cached_grouping, colorize,
                          compute_grouping, create_demo_workspace, dataset_statistics, file_key, list_users, load_image,
                          load_label, open_workspace, thumbnail)
from pss.api.users import find_record, read_user, user_records
from pss.fileio import atomic_path, write_bytes_atomic, write_text_atomic
from pss.runs import RunRecord
from pss.status import ACTIVE, FINISHED, Status

__all__ = [
    "ACTIVE", "CLASS_NAMES", "DEFAULT_WORKSPACE", "FINISHED", "IGNORE_INDEX", "NUM_CLASSES", "THUMB_SIZE",
    "VOC_PALETTE",
    "DatasetStatistics", "ImageRecord", "RunRecord", "Status", "UserCollection", "Workspace", "atomic_path",
    "cached_grouping", "colorize", "compute_grouping", "create_demo_workspace", "dataset_statistics", "file_key",
    "find_record", "list_users", "load_image", "load_label", "open_workspace", "read_user", "thumbnail",
    "user_records", "write_bytes_atomic", "write_text_atomic",
]

# Runs as jobs (launch / cancel / resume / delete, the worker), the launch form, devices and a run's progress; none of
# these imports torch (GPUs are probed in a subprocess).
from pss.api.devices import device_choices
from pss.api.jobs import JobService, Launched, job_service
from pss.api.launch_form import LaunchRequest
from pss.api.progress import Progress, latest_series, measure_progress

__all__ += ["JobService", "LaunchRequest", "Launched", "Progress", "device_choices", "job_service", "latest_series",
            "measure_progress"]

# Inspect / Compare: one image under one run (cached inference, maps as PNG) and runs side by side.
from pss.api.compare import (Comparison, compare_image, export_tables, image_differences,  # noqa: E402
                             per_class_table, results_for_runs)
from pss.api.inspect import clear_caches, image_inference  # noqa: E402
from pss.api.inspect_maps import InspectMaps, PixelInspection, inspect_maps, inspect_pixel  # noqa: E402
from pss.api.run_choice import RunChoice, done_runs  # noqa: E402

__all__ += ["Comparison", "InspectMaps", "PixelInspection", "RunChoice", "clear_caches", "compare_image",
            "done_runs", "export_tables", "image_differences", "image_inference", "inspect_maps", "inspect_pixel",
            "per_class_table", "results_for_runs"]
