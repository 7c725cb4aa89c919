"""Label tables: which value of a label map is which vertebra. Built in: TotalSegmentator's `total`
task (26 S1, 27 L5 ... 50 C1; its other values 1-117 are organs and other structures, known and not
screened) and its `vertebrae_body` task (1 vertebral body, 2 intervertebral disc: bodies told apart by
the discs, levels unknown), VerSe's (1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 28 T13), and `osteonet` (the
screen's own segmentation: vertebral bodies in VerSe's numbering). A user table is a JSON file
``{"structure": "vertebra" | "body", "labels": {"27": "L5", ...}, "other": [1, 2, ...]}`` or a CSV file
with columns ``value,name`` (value 0 is background; names other than vertebra levels are known
structures that are not screened)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Dict, FrozenSet, List, Optional, Sequence

from .._errors import nearest

__all__ = ["LEVELS", "SCREENED_LEVELS", "LabelTable", "BUILTIN_TABLES", "load_table", "level_rank", "is_level"]

#: Every vertebra level in head-to-feet order (T13 and L6 are the common numeric variants).
LEVELS = tuple([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + ["T13"] +
               [f"L{i}" for i in range(1, 7)] + ["S1"])
#: Levels the screen measures: C1 (no body), C2 (the dens) and S1 (part of the sacrum) are not.
SCREENED_LEVELS = tuple(v for v in LEVELS if v not in ("C1", "C2", "S1"))


def is_level(name: str) -> bool:
    return name in LEVELS


def level_rank(name: str) -> int:
    return LEVELS.index(name)


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """`vertebrae`: label value -> level name (or "" for bodies told apart by connected components);
    `known`: every value the table allows (vertebrae and other structures); `structure`: whether a
    vertebra's label covers the whole vertebra or its body only."""

    name: str
    vertebrae: Dict[int, str]
    known: FrozenSet[int]
    structure: str  # "vertebra" or "body"
    description: str
    components: bool = False  # vertebrae_body: one value for all bodies, split by connected components

    def describe_known(self) -> str:
        vals = sorted(self.known)
        runs, start = [], vals[0] if vals else None
        for a, b in zip(vals, vals[1:] + [None]):
            if b != a + 1:
                runs.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        return ", ".join(runs)

    def spine_order(self) -> List[int]:
        """The screened vertebra values in head-to-feet order."""
        vals = [v for v, n in self.vertebrae.items() if n in SCREENED_LEVELS]
        return sorted(vals, key=lambda v: level_rank(self.vertebrae[v]))


def _total() -> LabelTable:
    names = ["S1", "L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + [f"C{i}" for i in range(7, 0, -1)]
    vert = {26 + i: n for i, n in enumerate(names)}
    return LabelTable("total", vert, frozenset(range(1, 118)), "vertebra",
                      "TotalSegmentator `total` task (v2): 26 S1, 27 L5 ... 31 L1, 32 T12 ... 43 T1, 44 C7 ... 50 C1; "
                      "values 1-117 known, the other structures are not screened")


def _verse() -> LabelTable:
    vert = {i + 1: f"C{i + 1}" for i in range(7)}
    vert.update({8 + i: f"T{i + 1}" for i in range(12)})
    vert.update({20 + i: f"L{i + 1}" for i in range(6)})
    vert[28] = "T13"
    return LabelTable("verse", vert, frozenset(vert), "vertebra",
                      "VerSe: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 28 T13 (whole vertebrae)")


def _osteonet() -> LabelTable:
    v = _verse()
    return LabelTable("osteonet", dict(v.vertebrae), v.known, "body",
                      "osteonet's own segmentation: vertebral bodies in VerSe's numbering")


def _vertebrae_body() -> LabelTable:
    return LabelTable("vertebrae_body", {1: ""}, frozenset({1, 2}), "body",
                      "TotalSegmentator `vertebrae_body` task: 1 vertebral body, 2 intervertebral disc (levels unknown: "
                      "bodies are told apart by connected components)", components=True)


BUILTIN_TABLES = {"total": _total, "verse": _verse, "vertebrae_body": _vertebrae_body, "osteonet": _osteonet}


def _int(value, spec: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"label table {spec}: label values must be integers, got value={value!r}") from None


def _from_mapping(name: str, labels: Dict[int, str], other: Sequence[int], structure: str) -> LabelTable:
    if structure not in ("vertebra", "body"):
        raise ValueError(f"label table {name}: structure must be 'vertebra' or 'body', got structure={structure!r}")
    vert, known = {}, set(int(v) for v in other)
    for value, level in labels.items():
        if value <= 0:
            raise ValueError(f"label table {name}: values must be positive integers, got value={value}")
        known.add(value)
        if is_level(level):
            vert[value] = level
    if not vert:
        raise ValueError(f"label table {name}: names no vertebra level (C1..C7, T1..T13, L1..L6, S1), got "
                         f"names={sorted(set(labels.values()))[:8]}")
    seen: Dict[str, int] = {}
    for value, level in vert.items():
        if level in seen:
            raise ValueError(f"label table {name}: level {level} has two values, got values={seen[level]} and {value}")
        seen[level] = value
    return LabelTable(os.path.basename(name), vert, frozenset(known), structure, f"user table {name}")


def load_table(spec: Optional[str]) -> LabelTable:
    """A built-in table by name ("total", "verse", "vertebrae_body", "osteonet") or a user table file
    (.json or .csv, see the module docstring). Unknown names raise ValueError with the nearest one."""
    if spec is None:
        spec = "total"
    if not isinstance(spec, str):
        raise TypeError(f"load_table: expected a table name or a file path, got {type(spec).__name__}")
    if spec in BUILTIN_TABLES:
        return BUILTIN_TABLES[spec]()
    if not os.path.exists(spec):
        raise ValueError(f"label table: unknown table {spec!r}; did you mean {nearest(spec, list(BUILTIN_TABLES))!r}? "
                         f"(built in: {', '.join(BUILTIN_TABLES)}; or a .json/.csv file)")
    low = spec.lower()
    try:
        if low.endswith(".json"):
            with open(spec) as f:
                obj = json.load(f)
            if not isinstance(obj, dict) or not isinstance(obj.get("labels"), dict):
                raise ValueError(f"label table {spec}: expected an object with a 'labels' mapping, got "
                                 f"{type(obj).__name__}")
            labels = {_int(k, spec): str(v) for k, v in obj["labels"].items()}
            return _from_mapping(spec, labels, [_int(v, spec) for v in obj.get("other", [])],
                                 str(obj.get("structure", "vertebra")))
        if low.endswith(".csv"):
            with open(spec, newline="") as f:
                rows = list(csv.DictReader(f))
            if not rows or "value" not in rows[0] or "name" not in rows[0]:
                raise ValueError(f"label table {spec}: expected CSV columns value,name, got "
                                 f"{list(rows[0]) if rows else 'no rows'}")
            labels = {_int(r["value"], spec): (r["name"] or "").strip() for r in rows if _int(r["value"], spec) != 0}
            structure = rows[0].get("structure", "") or "vertebra"
            return _from_mapping(spec, labels, [], structure.strip())
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error, KeyError) as e:
        raise ValueError(f"label table {spec}: unreadable ({type(e).__name__})") from None
    except (TypeError, AttributeError) as e:
        raise ValueError(f"label table {spec}: malformed ({e})") from None
    raise ValueError(f"label table {spec}: expected a .json or .csv file, got {os.path.basename(spec)!r}")
