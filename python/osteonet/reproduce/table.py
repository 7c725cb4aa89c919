"""The one table.json layout of every reproduction.

```
{"osteonet_table": 1, "paper": "dsnet", "paper_id": "000", "title": ..., "preset": "quick", "seed": 0,
 "data": {...where the data came from, counts...}, "config": {...the preset...},
 "rows": [{"paper_id": "000", "table": "Table 1", "method": "ResNet50+DS (DSNet)", "n": 18,
           "metrics": {"map": {"value": 37.7, "ci": null, "paper": 83.4, "unit": "%"}, ...},
           "details": {...counts, confusion matrices, run folder...}}, ...],
 "extras": {...paper-specific: comparisons, histories...}, "files": {...pictures, run folders...},
 "timing": {"seconds": ...}}
```
Every row has ``paper_id``, ``method`` and ``metrics``; each metric has ``value`` (ours; null where the
method was not run), ``ci`` (95 % interval or null) and ``paper`` (the paper's value beside it; null
or a text such as "> 0.98" where the paper gives no number). Timings live under ``timing`` only, so
two runs at one seed give equal tables apart from it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence

from ..io import write_json, write_text

__all__ = ["metric", "row", "write_table", "TABLE_VERSION"]

TABLE_VERSION = 1


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def metric(value: Any, ci: Optional[Sequence[Any]] = None, paper: Any = None, unit: Optional[str] = None) -> Dict[str, Any]:
    """One cell: ours (``value``, its 95 % ``ci``) beside the paper's (``paper``)."""
    out = {"value": _num(value), "ci": None if ci is None else [_num(v) for v in ci], "paper": paper}
    if unit:
        out["unit"] = unit
    return out


def row(paper_id: str, method: str, metrics: Dict[str, Dict[str, Any]], table: Optional[str] = None,
        n: Optional[int] = None, **details: Any) -> Dict[str, Any]:
    r: Dict[str, Any] = {"paper_id": paper_id}
    if table:
        r["table"] = table
    r["method"] = method
    if n is not None:
        r["n"] = int(n)
    r["metrics"] = metrics
    if details:
        r["details"] = details
    return r


def write_table(out: str, paper: str, paper_id: str, title: str, preset: str, seed: int, data: Dict[str, Any],
                config: Dict[str, Any], rows: List[Dict[str, Any]], markdown: str, extras: Optional[Dict[str, Any]] = None,
                files: Optional[Dict[str, Any]] = None, timing: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Writes ``out/table.json`` (the layout above) and ``out/table.md``; returns the JSON object."""
    for r in rows:
        if not {"paper_id", "method", "metrics"} <= set(r) or any(set(m) < {"value", "ci", "paper"} for m in r["metrics"].values()):
            raise ValueError(f"write_table: a row needs paper_id, method and metrics of value/ci/paper, got {sorted(r)}")
    table = {"osteonet_table": TABLE_VERSION, "paper": paper, "paper_id": paper_id, "title": title, "preset": preset,
             "seed": seed, "data": data, "config": config, "rows": rows, "extras": extras or {}, "files": files or {},
             "timing": timing or {}}
    write_text(os.path.join(out, "table.md"), markdown)
    write_json(os.path.join(out, "table.json"), table)
    return table
