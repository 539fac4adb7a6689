"""What a listener remembers about one folder, in a compact form.

A folder's state is the baseline every change is diffed against: UIDVALIDITY, the next UID
not yet seen, HIGHESTMODSEQ, the set of UIDs known to exist, and for each flag the UIDs
that carry it. Sets of UIDs are kept as sorted inclusive ranges (:class:`RangeSet`) and
stored as IMAP sequence sets (``1:40,42``): mail mostly arrives with rising UIDs and old
mail is mostly ``\\Seen``, so a mailbox of 50,000 messages usually needs a few hundred
ranges, not 50,000 numbers.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FolderState", "RangeSet"]


class RangeSet:
    """A mutable set of positive integers kept as sorted, disjoint, non-adjacent ranges."""

    __slots__ = ("_hi", "_lo")

    def __init__(self, values: Iterable[int] = ()) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for value in sorted(set(values)):
            if self._hi and self._hi[-1] == value - 1:
                self._hi[-1] = value
            else:
                self._lo.append(value)
                self._hi.append(value)

    @classmethod
    def from_text(cls, text: str) -> RangeSet:
        """Parse a sequence set (``1:3,7``); the empty string is the empty set."""
        out = cls()
        for part in text.split(","):
            if not part:
                continue
            low, _, high = part.partition(":")
            a, b = int(low), int(high or low)
            out.add_range(min(a, b), max(a, b))
        return out

    def to_text(self) -> str:
        """The set as a sequence set, ``""`` when empty."""
        return ",".join(
            str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in zip(self._lo, self._hi, strict=True)
        )

    def ranges(self) -> list[tuple[int, int]]:
        """The inclusive ranges, ascending."""
        return list(zip(self._lo, self._hi, strict=True))

    def copy(self) -> RangeSet:
        """An independent copy."""
        out = RangeSet()
        out._lo = list(self._lo)
        out._hi = list(self._hi)
        return out

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._lo, value) - 1
        return i >= 0 and value <= self._hi[i]

    def __iter__(self) -> Iterator[int]:
        for lo, hi in zip(self._lo, self._hi, strict=True):
            yield from range(lo, hi + 1)

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in zip(self._lo, self._hi, strict=True))

    def __bool__(self) -> bool:
        return bool(self._lo)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._lo == other._lo and self._hi == other._hi

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RangeSet({self.to_text()!r})"

    def max(self) -> int | None:
        """The largest member, or None when empty."""
        return self._hi[-1] if self._hi else None

    def add(self, value: int) -> None:
        """Add one member."""
        self.add_range(value, value)

    def add_range(self, low: int, high: int) -> None:
        """Add every integer in ``low..high`` (inclusive)."""
        lo, hi = self._lo, self._hi
        # First range that could touch [low, high]: ends at or after low - 1.
        start = bisect_right(lo, low - 1)
        if start > 0 and hi[start - 1] >= low - 1:
            start -= 1
        end = start
        while end < len(lo) and lo[end] <= high + 1:
            end += 1
        if start < end:
            low = min(low, lo[start])
            high = max(high, hi[end - 1])
        lo[start:end] = [low]
        hi[start:end] = [high]

    def discard(self, value: int) -> None:
        """Remove one member if present."""
        lo, hi = self._lo, self._hi
        i = bisect_right(lo, value) - 1
        if i < 0 or value > hi[i]:
            return
        if lo[i] == hi[i]:
            del lo[i]
            del hi[i]
        elif value == lo[i]:
            lo[i] += 1
        elif value == hi[i]:
            hi[i] -= 1
        else:
            lo.insert(i + 1, value + 1)
            hi.insert(i + 1, hi[i])
            hi[i] = value - 1


@dataclass(slots=True)
class FolderState:
    """The stored state of one watched folder (a row of ``imap_folders``)."""

    folder_no: int
    version: int
    uidvalidity: int | None = None
    uidnext: int | None = None
    highestmodseq: int | None = None
    uids: RangeSet = field(default_factory=RangeSet)
    flags: dict[str, RangeSet] = field(default_factory=dict)

    @property
    def initialized(self) -> bool:
        """Whether a baseline was recorded."""
        return self.uidvalidity is not None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> FolderState:
        """Build from an ``imap_folders`` row."""
        return cls(
            folder_no=int(row["folder_no"]),
            version=int(row["version"]),
            uidvalidity=row["uidvalidity"],
            uidnext=row["uidnext"],
            highestmodseq=row["highestmodseq"],
            uids=RangeSet.from_text(row["uids"] or ""),
            flags={str(k): RangeSet.from_text(str(v)) for k, v in (row["flags"] or {}).items()},
        )

    def columns(self) -> dict[str, Any]:
        """The row values to store (everything but keys and bookkeeping)."""
        return {
            "uidvalidity": self.uidvalidity,
            "uidnext": self.uidnext,
            "highestmodseq": self.highestmodseq,
            "uids": self.uids.to_text(),
            "flags": {flag: uids.to_text() for flag, uids in sorted(self.flags.items()) if uids},
        }

    def reset(self, uidvalidity: int, uidnext: int, highestmodseq: int | None) -> None:
        """Forget every message: a new baseline follows."""
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highestmodseq = highestmodseq
        self.uids = RangeSet()
        self.flags = {}

    def flags_of(self, uid: int) -> list[str]:
        """The stored flags of ``uid``."""
        return [flag for flag, uids in self.flags.items() if uid in uids]

    def set_flags(self, uid: int, flags: Iterable[str]) -> None:
        """Record that ``uid`` exists and has exactly ``flags``."""
        self.uids.add(uid)
        wanted = set(flags)
        for flag, uids in list(self.flags.items()):
            if flag in wanted:
                uids.add(uid)
            else:
                uids.discard(uid)
                if not uids:
                    del self.flags[flag]
        for flag in wanted - self.flags.keys():
            self.flags[flag] = RangeSet((uid,))

    def forget(self, uid: int) -> None:
        """Record that ``uid`` no longer exists."""
        self.uids.discard(uid)
        for flag, uids in list(self.flags.items()):
            uids.discard(uid)
            if not uids:
                del self.flags[flag]
