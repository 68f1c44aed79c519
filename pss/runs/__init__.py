"""Run store: one directory per run + an SQLite index of runs and jobs, and the job queue/worker.

Pure stdlib + PyYAML (no torch), so the app can import it. See ``store.py`` for the layout.
"""
from __future__ import annotations

from pss.runs.index import RunRecord
from pss.runs.jobs import Job, JobQueue
from pss.runs.meta import FORMAT_VERSION
from pss.runs.run import Run
from pss.runs.store import ReindexResult, RunStore
from pss.runs.worker import Worker

__all__ = ["FORMAT_VERSION", "Job", "JobQueue", "ReindexResult", "Run", "RunRecord", "RunStore", "Worker"]
