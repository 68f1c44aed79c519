"""The one reader of a user's collection, with the one rule for user names, cached while the folder is unchanged.

Every caller (the gallery paging through thumbnails, Inspect and Compare resolving an image name, statistics,
grouping) reads users through ``read_user``. Re-reading ``imgLabelList.txt`` and listing thousands of files on
every request would dominate a page, so the parsed collection is kept in memory and re-read only when the
folder (files added or removed), its image or mask folders or a tag list changes (their mtimes).

A user name comes from a client, so it is checked before it is joined into a path: it must be a user folder
name (``id<N>``, as ``pss.data.pss_layout`` lists them), which rules out ``../``, ``/`` and absolute paths.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from pss.data import pss_layout
from pss.data.pss_layout import UserCollection
from pss.data.records import ImageRecord
from pss.errors import DatasetError
from pss.workspace import Workspace

USER_NAME = re.compile(r"id[0-9]+")  # the user folder names pss_layout.list_users lists
_WATCHED = ("", "JPEGImages", "SegmentationClass", "imgLabelList.txt", "imgLabelListnew.txt")

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str], tuple[tuple[int, ...], UserCollection]] = {}


def check_user_name(ws: Workspace, user: object) -> str:
    """``user`` if it is a user folder name (``id<N>``), else DatasetError (a name is never joined into a path
    unchecked). Says nothing about whether the folder exists: ``read_user`` does."""
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        hint = "choose a user first" if not user else "user folders are named id1, id2, ..."
        raise DatasetError(f"unknown user {user!r} in {ws.personal}; {hint}")
    return user


def _signature(user_dir: Path) -> tuple[int, ...]:
    """mtimes of the user folder, its image and mask folders and tag lists (0 for a missing optional part);
    FileNotFoundError when the folder itself is missing."""
    stamps = []
    for part in _WATCHED:
        try:
            stamps.append(os.stat(user_dir / part).st_mtime_ns)
        except FileNotFoundError:
            if part == "":
                raise
            stamps.append(0)
    return tuple(stamps)


def read_user(ws: Workspace, user: str) -> UserCollection:
    """The user's collection (records in folder order), cached while unchanged.

    DatasetError if ``user`` is not a user folder name, or its folder is missing (never there, or removed while
    the app runs); the message lists the users there are now.
    """
    user = check_user_name(ws, user)
    user_dir = ws.personal / user
    key = (str(ws.root), user)
    try:
        signature = _signature(user_dir)
    except FileNotFoundError as exc:
        with _LOCK:
            _CACHE.pop(key, None)
        known = ", ".join(pss_layout.list_users(ws.personal)) if ws.personal.is_dir() else ""
        raise DatasetError(f"unknown user {user!r} in {ws.personal}: its folder is gone or was never there; "
                           f"known users now: {known or 'none'}") from exc
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    result = pss_layout.read_user(ws.personal, user)
    with _LOCK:
        _CACHE[key] = (signature, result)
    return result


def user_records(ws: Workspace, user: str) -> list[ImageRecord]:
    """``read_user(ws, user).records``: the user's image records."""
    return read_user(ws, user).records


def find_record(records: list[ImageRecord], name: str, user: str) -> ImageRecord:
    """The record of image ``name`` among ``records`` of ``user``; DatasetError if there is none."""
    for record in records:
        if record.name == name:
            return record
    raise DatasetError(f"user {user!r} has no image named {name!r}")


def forget_users(ws: Workspace | None = None, user: str | None = None) -> None:
    """Drop cached collections: of one user of ``ws``, of every user of ``ws``, or (``ws=None``) all."""
    with _LOCK:
        for key in list(_CACHE):
            if ws is None or (key[0] == str(ws.root) and (user is None or key[1] == user)):
                del _CACHE[key]


__all__ = ["USER_NAME", "check_user_name", "find_record", "forget_users", "read_user", "user_records"]
