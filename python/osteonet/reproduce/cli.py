"""`osteonet reproduce <paper>|all`: a paper's tables as a preset of tasks (osteonet.reproduce)."""

from __future__ import annotations

from . import PAPERS

__all__ = ["register"]


def _reproduce(a) -> int:
    from . import reproduce, reproduce_all

    if a.paper == "all":
        if a.variants or a.data:
            raise ValueError("reproduce all: --variants and --data apply to one paper; run `osteonet reproduce <paper>` for them")
        res = reproduce_all(a.out, preset=a.preset, seed=a.seed, progress=not a.quiet)
        print(f"wrote {a.out}/summary.md ({res['seconds']:.0f} s)")
        return 0
    variants = [v for v in a.variants.split(",") if v] if a.variants else None
    res = reproduce(a.paper, a.out, preset=a.preset, seed=a.seed, data=a.data, variants=variants, progress=not a.quiet)
    print(res["markdown"])
    print(f"wrote {a.out}/table.json and {a.out}/table.md ({res['seconds']:.0f} s)")
    return 0


def register(sub) -> None:
    q = sub.add_parser("reproduce", help="reproduce a paper's tables on built-in data (a preset of tasks)")
    q.add_argument("paper", choices=["all", *PAPERS], help="one paper, or all of them (OUT/<paper> and OUT/summary.md)")
    q.add_argument("--preset", choices=["quick", "paper"], default="quick")
    q.add_argument("--out", required=True)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--variants", default=None, help="comma-separated subset (dsnet: detectors; ovf: aggregators)")
    q.add_argument("--data", default=None, help="an existing data folder (default: generate into OUT/data)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(fn=_reproduce)
