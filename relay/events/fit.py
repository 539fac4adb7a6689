"""Fit an event envelope into the webhook size limit by trimming its largest data values.

An event is never dropped for being large: the largest values inside ``data`` are cut, one
at a time, until the serialized envelope fits. A cut string ends with
``…[trimmed N bytes]``, a cut list ends with a ``…[trimmed N items]`` element, and
``data["trimmed"]`` lists the dotted paths that were cut (``data.attachments``,
``data.text.html``) so receivers know to fetch the full message if they need it.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_LIMIT = 256 * 1024
TRIMMED_KEY = "trimmed"

# Values smaller than this are not worth cutting: the marker would be about as large.
_MIN_TRIM = 64

Key = str | int
Path = tuple[Key, ...]


# The same output as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``, the
# serialization of ``Event.payload``, without building an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _size(value: Any) -> int:
    return len(_dumps(value).encode())


def _string_marker(removed_bytes: int) -> str:
    return f"…[trimmed {removed_bytes} bytes]"


def _list_marker(removed_items: int) -> str:
    return f"…[trimmed {removed_items} items]"


class _Trimmer:
    """Cuts values inside one ``data`` dict; remembers originals so repeated cuts add up."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.originals: dict[Path, Any] = {}
        self.removed: dict[Path, int] = {}
        self.item_sizes: dict[Path, list[int]] = {}
        self.exhausted: set[Path] = set()
        self.paths: list[str] = []

    def trim(self, container: dict[str, Any], path: Path, need: int) -> bool:
        """Cut about ``need`` bytes from the largest value under ``container`` that allows it."""
        keys = [k for k in container if path or k != TRIMMED_KEY]
        sized = sorted(((_size(container[k]), k) for k in keys), key=lambda pair: -pair[0])
        for index, (size, key) in enumerate(sized):
            if size < _MIN_TRIM:
                break
            # Cut the largest down towards the next one, but at least half of what is needed:
            # large siblings end up sharing the cut instead of the largest vanishing whole.
            following = sized[index + 1][0] if index + 1 < len(sized) else 0
            share = min(need, max(size - following, (need + 1) // 2))
            if self._trim_value(container, key, (*path, key), size, share):
                return True
        return False

    def _trim_value(self, container: Any, key: Key, path: Path, size: int, need: int) -> bool:
        if path in self.exhausted:
            return False
        value = container[key]
        if isinstance(value, dict):
            return self.trim(value, path, need)
        if isinstance(value, list):
            sizes = None
            if value and path not in self.originals:
                # One element dominating the list (a single huge attachment) is cut inside,
                # which keeps the others whole.
                sizes = [_size(item) for item in value]
                largest = max(range(len(value)), key=sizes.__getitem__)
                if 2 * sizes[largest] > size and self._trim_value(
                    value, largest, (*path, largest), sizes[largest], need
                ):
                    return True
            return self._cut_list(container, key, path, need, sizes)
        if isinstance(value, str):
            return self._cut_string(container, key, path, need)
        return False

    def _cut_string(self, container: Any, key: Key, path: Path, need: int) -> bool:
        raw = str(self.originals.setdefault(path, container[key])).encode()
        current = str(container[key]).encode()
        kept_bytes = len(raw) - self.removed.get(path, 0)
        # The marker goes back in, so cut that much more as well.
        target = max(0, kept_bytes - need - len(_string_marker(len(raw)).encode()))
        kept = raw[:target].decode(errors="ignore")
        removed = len(raw) - len(kept.encode())
        replacement = kept + _string_marker(removed)
        if not kept:
            self.exhausted.add(path)
        if len(replacement.encode()) >= len(current):
            self.exhausted.add(path)
            return False
        container[key] = replacement
        self.removed[path] = removed
        self._record(path)
        return True

    def _cut_list(
        self, container: Any, key: Key, path: Path, need: int, sizes: list[int] | None
    ) -> bool:
        original: list[Any] = self.originals.setdefault(path, container[key])
        if path not in self.item_sizes:
            self.item_sizes[path] = sizes or [_size(item) for item in original]
        item_sizes = self.item_sizes[path]
        current_size = _size(container[key])
        kept = len(original) - self.removed.get(path, 0)
        freed = 0
        marker = len(_list_marker(len(original)).encode()) + 1
        while kept > 0 and freed < need + marker:
            kept -= 1
            freed += item_sizes[kept] + 1
        replacement = [*original[:kept], _list_marker(len(original) - kept)]
        if kept == 0:
            self.exhausted.add(path)
        if _size(replacement) >= current_size:
            self.exhausted.add(path)
            return False
        container[key] = replacement
        self.removed[path] = len(original) - kept
        self._record(path)
        return True

    def _record(self, path: Path) -> None:
        dotted = ".".join(["data", *(str(p) for p in path)])
        if dotted not in self.paths:
            self.paths.append(dotted)
        self.data[TRIMMED_KEY] = list(self.paths)


def fit_payload(envelope: dict[str, Any], limit: int = DEFAULT_LIMIT) -> str:
    """The envelope serialized like ``Event.payload``, trimmed inside ``data`` to ``limit`` bytes.

    An envelope that fits is returned unchanged byte for byte. Otherwise the largest values in
    ``envelope["data"]`` are cut until the UTF-8 size is at most ``limit``, and the cut paths
    are listed in ``data["trimmed"]``. Keys outside ``data`` are never changed and the input
    is not modified. When nothing more can be cut, the smallest result reached is returned.
    """
    payload = _dumps(envelope)
    size = len(payload.encode())
    data = envelope.get("data")
    if size <= limit or not isinstance(data, dict):
        return payload
    # A JSON round trip copies exactly what is serialized and leaves the caller's dict alone.
    copy: dict[str, Any] = json.loads(_dumps(data))
    trimmer = _Trimmer(copy)
    trimmed = {**envelope, "data": copy}
    while size > limit and trimmer.trim(copy, (), size - limit):
        payload = _dumps(trimmed)
        size = len(payload.encode())
    return payload
