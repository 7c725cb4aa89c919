"""The papers' tables as presets of tasks: each reproduction generates osteonet's built-in data in the
task's documented layout, trains and evaluates through osteonet.tasks (the code a user runs on their
own data) and writes ``table.json`` in one layout for all papers (osteonet/reproduce/table.py) with
``table.md``, pictures and the run folders. `osteonet reproduce <paper>|all` on the command line."""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Dict, List, Optional

from ..io import write_text

__all__ = ["PAPERS", "reproduce", "reproduce_all"]

#: paper -> its seed id in ../shared/seeds
PAPERS = {"dsnet": "000", "ovf": "002", "bmd": "003", "hip": "004"}


def reproduce(paper: str, out: str, preset: str = "quick", seed: int = 0, data: Optional[str] = None,
              variants: Optional[List[str]] = None, progress: bool = True,
              overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One paper's reproduction into ``out``; returns {"rows", "markdown", "seconds", ...}."""
    if paper not in PAPERS:
        raise ValueError(f"reproduce: unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    module = importlib.import_module(f"{__name__}.{paper}")
    return module.reproduce(out, preset=preset, seed=seed, data=data, variants=variants, progress=progress,
                            overrides=overrides)


def reproduce_all(out: str, preset: str = "quick", seed: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Every paper in turn, each in ``out/<paper>``, and ``out/summary.md`` with all tables."""
    parts, t_all = ["# osteonet: the papers' tables on the built-in data", ""], time.time()
    for paper in PAPERS:
        t0 = time.time()
        print(f"== reproduce {paper} ({preset}) -> {os.path.join(out, paper)}", flush=True)
        reproduce(paper, os.path.join(out, paper), preset=preset, seed=seed, progress=progress)
        with open(os.path.join(out, paper, "table.md")) as f:
            parts += [f"## {paper} ({time.time() - t0:.0f} s; files in `{paper}/`)", "", f.read().strip(), ""]
    seconds = time.time() - t_all
    parts.append(f"Preset `{preset}`, seed {seed}, {seconds:.0f} s in all.")
    write_text(os.path.join(out, "summary.md"), "\n".join(parts) + "\n")
    return {"seconds": seconds}
