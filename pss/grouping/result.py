"""``GroupingResult``: one user's k-means groups and 2-D embedding, as shown by the app and used by the trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pss.errors import DatasetError

FORMAT = "pss-grouping"
FORMAT_VERSION = 1


@dataclass
class GroupingResult:
    """The grouping of one user's readable images.

    Attributes:
        user: the PSS user folder name (``"id3"``).
        names: image names (file stems) with a group, in the collection's order.
        groups: (n,) int64 group id of each name, in [0, k).
        embedding: (n, 2) float32 UMAP (or PCA, for tiny users) coordinates of each name.
        k: groups actually used (``effective_k`` of the requested k, capped for small users).
        k_requested: the K asked for (80 in the paper).
        feature_model: the feature cache namespace, e.g. ``"lite0-p1"`` (model + weights + preprocessing).
        skipped: names of images that could not be read (no group), with ``skip_reasons[name]`` saying why.
        seed: random seed of k-means and UMAP.
        key: SHA-1 of the inputs (image contents, model, k, seed); the on-disk cache is reused only if it matches.
    """

    user: str
    names: list[str]
    groups: np.ndarray
    embedding: np.ndarray
    k: int
    k_requested: int
    feature_model: str
    skipped: list[str] = field(default_factory=list)
    skip_reasons: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    key: str = ""

    def __post_init__(self) -> None:
        self.groups = np.asarray(self.groups, dtype=np.int64).reshape(-1)
        self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1, 2)
        n = len(self.names)
        if self.groups.shape[0] != n or self.embedding.shape[0] != n:
            raise DatasetError(f"grouping of user {self.user!r} is inconsistent: {n} names, "
                               f"{self.groups.shape[0]} groups, {self.embedding.shape[0]} embedding rows")
        if n and (self.groups.min() < 0 or self.groups.max() >= self.k):
            raise DatasetError(f"grouping of user {self.user!r} has group ids outside [0, {self.k})")
        self._index = {name: i for i, name in enumerate(self.names)}

    def group_of(self, name: str) -> int:
        """Group id of image ``name``; DatasetError if the image was skipped or is not in this user's grouping."""
        if name in self._index:
            return int(self.groups[self._index[name]])
        if name in self.skip_reasons or name in self.skipped:
            raise DatasetError(f"image {name!r} of user {self.user!r} has no group: it was skipped "
                               f"({self.skip_reasons.get(name, 'unreadable')}); fix the file and group again")
        raise DatasetError(f"image {name!r} is not in the grouping of user {self.user!r}; "
                           f"group the user again if the image was added after grouping")

    def members(self, group: int) -> list[str]:
        """Names of the images in ``group`` (collection order); empty for an unused id."""
        return [name for name, g in zip(self.names, self.groups, strict=True) if g == group]

    def sizes(self) -> np.ndarray:
        """(k,) int64: number of images in each group."""
        return np.bincount(self.groups, minlength=self.k).astype(np.int64)

    def as_mapping(self) -> dict[str, int]:
        """image name -> group id (the form ``write_cluster_list`` and ``UserCollection.groups`` use)."""
        return {name: int(g) for name, g in zip(self.names, self.groups, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``from_dict(to_dict())`` gives an equal result."""
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "user": self.user, "names": list(self.names),
            "groups": [int(g) for g in self.groups],
            "embedding": [[float(x), float(y)] for x, y in self.embedding],
            "k": int(self.k), "k_requested": int(self.k_requested), "feature_model": self.feature_model,
            "skipped": list(self.skipped), "skip_reasons": dict(self.skip_reasons), "seed": int(self.seed),
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> GroupingResult:
        """Inverse of ``to_dict``; DatasetError naming the problem for a malformed or foreign payload."""
        if payload.get("format") != FORMAT or payload.get("version") != FORMAT_VERSION:
            raise DatasetError(f"not a {FORMAT} v{FORMAT_VERSION} payload (format={payload.get('format')!r}, "
                               f"version={payload.get('version')!r}); delete the cached file to recompute it")
        try:
            n = len(payload["names"])
            return cls(user=str(payload["user"]), names=[str(x) for x in payload["names"]],
                       groups=np.asarray(payload["groups"], dtype=np.int64),
                       embedding=np.asarray(payload["embedding"], dtype=np.float32).reshape(n, 2),
                       k=int(payload["k"]), k_requested=int(payload["k_requested"]),
                       feature_model=str(payload["feature_model"]),
                       skipped=[str(x) for x in payload.get("skipped", [])],
                       skip_reasons={str(a): str(b) for a, b in payload.get("skip_reasons", {}).items()},
                       seed=int(payload.get("seed", 0)), key=str(payload.get("key", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"malformed grouping payload ({type(exc).__name__}: {exc}); "
                               f"delete the cached file to recompute it") from exc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupingResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()
