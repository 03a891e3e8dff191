"""Per-file counts of vectors run, skipped (with the reason) and failed.

Each test that walks a file opens a `FileTally`, records every vector in it, and
ends with `finish()`, which fails on any failure and also when the counts differ
from the ones pinned in the test: a harness that quietly skips most vectors, or a
file that shrinks, does not pass. The conftest prints every tally at session end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.vectors.loader import Vector, count


@dataclass
class FileTally:
    file: str
    operation: str
    run: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    pinned: Counter[str] = field(default_factory=Counter)  # acceptable / policy outcomes

    def ran(self, v: Vector) -> None:
        self.run += 1

    def fail(self, v: Vector, why: str) -> None:
        self.run += 1
        self.failed.append(f"{v.describe()}: {why}")

    def check(self, v: Vector, ok: bool, why: str) -> None:
        if ok:
            self.ran(v)
        else:
            self.fail(v, why)

    def skip(self, v: Vector, reason: str) -> None:
        self.skipped[reason] += 1

    def pin(self, v: Vector, outcome: str) -> None:
        """Record the outcome chosen for an `acceptable` (or policy) case."""
        self.pinned[outcome] += 1

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def finish(self, *, run: int, skipped: int = 0) -> None:
        """Fail on any failed vector, or if the run/skip counts are not the pinned ones."""
        assert self.run + self.n_skipped == count(self.file), \
            f"{self.file}: {self.run} run + {self.n_skipped} skipped != {count(self.file)} tests"
        if self.failed:
            shown = "\n  ".join(self.failed[:40])
            more = f"\n  ... and {len(self.failed) - 40} more" if len(self.failed) > 40 else ""
            pytest.fail(f"{self.file} ({self.operation}): {len(self.failed)} of {self.run} "
                        f"vectors failed:\n  {shown}{more}", pytrace=False)
        assert (self.run, self.n_skipped) == (run, skipped), (
            f"{self.file} ({self.operation}): ran {self.run}, skipped {self.n_skipped} "
            f"({dict(self.skipped)}); expected ran {run}, skipped {skipped}"
        )


TALLIES: dict[tuple[str, str], FileTally] = {}
NOTES: list[str] = []


def start(file: str, operation: str) -> FileTally:
    """A fresh tally for (file, operation); a rerun replaces the previous one."""
    t = FileTally(file, operation)
    TALLIES[(file, operation)] = t
    return t


def skip_file(file: str, operation: str, reason: str) -> FileTally:
    """Count every test of a file as skipped for `reason` (no operation exists for it)."""
    t = start(file, operation)
    t.skipped[reason] += count(file)
    return t


def summary_lines() -> list[str]:
    if not TALLIES:
        return []
    width = max(len(f) for f, _ in TALLIES) + 2
    lines = [f"{'file':{width}}{'operation':34}{'run':>5}{'skip':>6}{'fail':>6}  notes"]
    totals = Counter[str]()
    for (file, op), t in sorted(TALLIES.items()):
        notes = [f"skipped {n}: {r}" for r, n in t.skipped.items()]
        notes += [f"pinned {n}: {o}" for o, n in t.pinned.items()]
        lines.append(f"{file:{width}}{op:34}{t.run:>5}{t.n_skipped:>6}{len(t.failed):>6}  "
                     + "; ".join(notes))
        totals.update(run=t.run, skipped=t.n_skipped, failed=len(t.failed))
    lines.append(f"{'total':{width}}{'':34}{totals['run']:>5}{totals['skipped']:>6}"
                 f"{totals['failed']:>6}")
    return lines


def as_json() -> list[dict[str, object]]:
    return [{"file": f, "operation": op, "run": t.run, "skipped": dict(t.skipped),
             "failed": t.failed, "pinned": dict(t.pinned)}
            for (f, op), t in sorted(TALLIES.items())]
