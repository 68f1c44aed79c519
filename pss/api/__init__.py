"""The engine facade used by the CLI, the app and notebooks (plain values in, plain values out)."""
from __future__ import annotations

from pss.api.data import (CLASS_NAMES, DEFAULT_WORKSPACE, NUM_CLASSES, THUMB_SIZE, VOC_PALETTE, DatasetStatistics,
                          ImageRecord, UserCollection, Workspace, cached_grouping, colorize, compute_grouping,
                          create_demo_workspace, dataset_statistics, file_key, list_users, load_image, load_label,
                          open_workspace, read_user, thumbnail)

__all__ = [
    "CLASS_NAMES", "DEFAULT_WORKSPACE", "NUM_CLASSES", "THUMB_SIZE", "VOC_PALETTE", "DatasetStatistics",
    "ImageRecord", "UserCollection", "Workspace", "cached_grouping", "colorize", "compute_grouping",
    "create_demo_workspace", "dataset_statistics", "file_key", "list_users", "load_image", "load_label",
    "open_workspace", "read_user", "thumbnail",
]

# Runs as jobs (launch / cancel / resume / delete, the worker); pss.api.jobs itself imports only the run store.
from pss.api.jobs import JobService, Launched, LaunchRequest, device_choices, job_service  # noqa: E402

__all__ += ["JobService", "LaunchRequest", "Launched", "device_choices", "job_service"]

# Inspect / Compare: one image under one run (cached inference, maps as PNG) and runs side by side.
from pss.api.compare import (Comparison, compare_image, export_tables, image_differences,  # noqa: E402
                             per_class_table, results_for_runs)
from pss.api.inspect import RunChoice, clear_caches, done_runs, image_inference  # noqa: E402
from pss.api.inspect_maps import InspectMaps, PixelInspection, inspect_maps, inspect_pixel  # noqa: E402

__all__ += ["Comparison", "InspectMaps", "PixelInspection", "RunChoice", "clear_caches", "compare_image",
            "done_runs", "export_tables", "image_differences", "image_inference", "inspect_maps", "inspect_pixel",
            "per_class_table", "results_for_runs"]
