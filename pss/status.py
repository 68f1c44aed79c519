"""The one set of run and job states, used by the engine, the run store, the job queue, the api and the app.

``Status`` is a ``StrEnum``: members compare equal to their strings and are stored as them (SQLite, JSON), so
records written before it existed read back unchanged.
"""
from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE: tuple[Status, ...] = (Status.QUEUED, Status.RUNNING)  # a job may still change the run
FINISHED: tuple[Status, ...] = (Status.DONE, Status.FAILED, Status.CANCELLED)

__all__ = ["ACTIVE", "FINISHED", "Status"]
