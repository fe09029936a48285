"""Garbage-collector thresholds for a process that runs pipelines.

Why: CPython runs a young-generation collection every 700 net container allocations, and a full
collection once enough objects have survived into the old generation. A pipeline allocates
several containers per record (consumed messages, records, header lists, join results) that live
until their batch is produced: on a chain step a young collection ran every ~200 records and
walked the live batch, ~8 % of the per-record time. A join also keeps objects for
up to a checkpoint interval (its decoded groups) and large containers for its whole window (expiry
indexes, the set of groups its store holds). Full collections then came every few thousand
records, each walking those containers: measured on the join benchmark (100k joined outputs),
0.94 CPU s of collection, about a tenth of the process's CPU; with young collections every
20,000 allocations, 0.30 s and no full collection. Records are freed by reference counting: the
collector only looks for reference cycles, which the record path does not make, so collecting
less often costs memory only for the rare cycle.
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def tune() -> None:
    """Raise the young-generation threshold (idempotent; a higher threshold set by the process
    is kept)."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
