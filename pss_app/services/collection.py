"""Reading a user's collection once and reusing it while its files are unchanged.

Paging through a gallery calls ``collection(ws, user)`` for every page; re-reading ``imgLabelList.txt`` and
listing thousands of files each time would dominate the page time, so the parsed collection is kept in
memory and re-read only when the folder (files added/removed) or the tag list changes (mtime).
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from pss.api import UserCollection, Workspace, list_users, read_user
from pss.errors import DatasetError

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str], tuple[tuple[int, ...], UserCollection]] = {}

_USER_NAME = re.compile(r"id[0-9]+")
_WATCHED = ("", "JPEGImages", "SegmentationClass", "imgLabelList.txt", "imgLabelListnew.txt")


def _signature(user_dir: Path) -> tuple[int, ...]:
    """mtimes of the user folder, its image and mask folders and tag list (0 for a missing optional part)."""
    stamps = []
    for part in _WATCHED:
        try:
            stamps.append(os.stat(user_dir / part).st_mtime_ns)
        except FileNotFoundError:
            if part == "":
                raise
            stamps.append(0)
    return tuple(stamps)


def collection(ws: Workspace, user: str) -> UserCollection:
    """The user's collection, cached while unchanged. DatasetError if the user is unknown or its folder is gone."""
    if not user:
        raise DatasetError("choose a user first")
    if not _USER_NAME.fullmatch(user):  # a name from a client is never joined into a path unchecked
        raise DatasetError(f"unknown user {user!r}; user folders are named id1, id2, ...")
    user_dir = ws.personal / user
    key = (str(ws.root), user)
    try:
        signature = _signature(user_dir)
    except FileNotFoundError as exc:
        with _LOCK:
            _CACHE.pop(key, None)
        known = ", ".join(list_users(ws)) if ws.personal.is_dir() else "none"
        raise DatasetError(f"the folder of user {user!r} ({user_dir}) is gone; known users now: {known}") from exc
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    result = read_user(ws, user)
    with _LOCK:
        _CACHE[key] = (signature, result)
    return result


def forget(ws: Workspace, user: str | None = None) -> None:
    """Drop cached collections (of one user, or all of this workspace)."""
    with _LOCK:
        for key in list(_CACHE):
            if key[0] == str(ws.root) and (user is None or key[1] == user):
                del _CACHE[key]
