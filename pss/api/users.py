"""The one reader of a user's collection, with the one rule for user names, cached while the folder is unchanged.

Every caller (the gallery paging through thumbnails, Inspect and Compare resolving an image name, statistics,
grouping) reads users through ``read_user``. Re-reading ``imgLabelList.txt`` and listing thousands of files on
every request would dominate a page, so the parsed collection is kept in memory and re-read only when something
the reader reads changes: the folder and its image and mask folders (files added or removed: their mtimes), or
any list file ``pss.data.pss_layout.read_user`` parses (tags, ``val_all.txt``, ``annotated.txt``, the groupings
``train_cluster<K>.txt``), keyed on each file's (mtime_ns, size). A folder's mtime alone misses a list file
edited in place (an editor saving without a rename, ``>>`` in a shell): the folder's entries do not change.

A user name comes from a client, so it is checked before it is joined into a path: it must be a user folder
name (``id<N>``, as ``pss.data.pss_layout`` lists them), which rules out ``../``, ``/`` and absolute paths.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from pss.data import pss_layout
from pss.data.annotations import ANNOTATED_LIST
from pss.data.pss_layout import UserCollection
from pss.data.records import ImageRecord
from pss.errors import DatasetError
from pss.workspace import Workspace

USER_NAME = re.compile(r"id[0-9]+")  # the user folder names pss_layout.list_users lists
_FOLDERS = ("", "JPEGImages", "SegmentationClass")  # entries added or removed change these mtimes
# every list file pss_layout.read_user parses (plus the train_cluster*.txt groupings, globbed in _signature)
_LIST_FILES = (*pss_layout.TAG_FILES, "val_all.txt", ANNOTATED_LIST)

_LOCK = threading.Lock()
Signature = tuple[tuple[str, int, int], ...]
_CACHE: dict[tuple[str, str], tuple[Signature, UserCollection]] = {}


def check_user_name(ws: Workspace, user: object) -> str:
    """``user`` if it is a user folder name (``id<N>``), else DatasetError (a name is never joined into a path
    unchecked). Says nothing about whether the folder exists: ``read_user`` does."""
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        hint = "choose a user first" if not user else "user folders are named id1, id2, ..."
        raise DatasetError(f"unknown user {user!r} in {ws.personal}; {hint}")
    return user


def _stamp(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of ``path``; (0, -1) when it is missing (a file appearing or vanishing changes it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0, -1
    return st.st_mtime_ns, st.st_size


def _signature(user_dir: Path) -> Signature:
    """(part, mtime_ns, size) of the user folder, its image and mask folders and every list file the reader reads
    (missing optional parts stamped (0, -1)); FileNotFoundError when the folder itself is missing."""
    root = os.stat(user_dir)  # raises FileNotFoundError: the caller reports the missing user
    stamps: list[tuple[str, int, int]] = [("", root.st_mtime_ns, root.st_size)]
    clusters = sorted(p.name for p in user_dir.glob("train_cluster*.txt"))
    for part in (*_FOLDERS[1:], *_LIST_FILES, *clusters):
        stamps.append((part, *_stamp(user_dir / part)))
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


# What a record's mask is, in the words every view uses (Inspect, Compare, their image lists): only an evaluation
# image's mask is ground truth that a view scores; an image annotated for training has a mask that is never scored.
MASK_SCORED = "ground truth (scored)"
MASK_TRAINING = "annotated for training — not scored"


def mask_role(record: ImageRecord) -> str | None:
    """``MASK_SCORED`` for an evaluation image (``record.eval_mask``), ``MASK_TRAINING`` for a masked image that is
    not scored (``annotated.txt``), ``None`` without a mask."""
    if record.eval_mask is not None:
        return MASK_SCORED
    return MASK_TRAINING if record.mask_path is not None else None


def forget_users(ws: Workspace | None = None, user: str | None = None) -> None:
    """Drop cached collections: of one user of ``ws``, of every user of ``ws``, or (``ws=None``) all."""
    with _LOCK:
        for key in list(_CACHE):
            if ws is None or (key[0] == str(ws.root) and (user is None or key[1] == user)):
                del _CACHE[key]


__all__ = ["MASK_SCORED", "MASK_TRAINING", "USER_NAME", "check_user_name", "find_record", "forget_users", "mask_role",
           "read_user", "user_records"]
