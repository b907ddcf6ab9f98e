"""`embodied-r view RUN_DIR`: turns a run's (or an evaluation's) samples/ folder into a static HTML viewer, index.html
with the page index embedded, one data/<page>.js per recorded page (loaded when shown) and the key-frame thumbnails
copied beside it; `--serve PORT` serves it on 127.0.0.1 and rebuilds it on each load, to follow a live run.

Nothing is fetched from the network: the page is one file plus the data beside it, and opens from disk (file://).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
from importlib import resources
from pathlib import Path

from embodied_data.atomic import write_text_atomically

log = logging.getLogger("embodied_r.view")


def template() -> str:
    """The viewer's HTML, shipped as package data (cluster/viewer/index.html)."""
    return resources.files("cluster").joinpath("viewer", "index.html").read_text(encoding="utf-8")


def _script_json(value) -> str:
    """JSON that is safe inside an inline <script> (no `</script>` or `<!--` can close or comment it)."""
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def _metrics_by_step(path: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            rows[int(row["step"])] = row  # a rewound step's later line wins
        except (ValueError, KeyError, TypeError):
            continue
    return rows


def samples_folder(source: str | Path) -> Path:
    """The samples/ folder of a run dir or an eval output folder (or `source` itself when it is one)."""
    source = Path(source)
    for candidate in (source / "samples", source):
        if (candidate / "pages").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{source} has no recorded samples (no samples/pages/): a training run records them every trainer.samples_every "
        "steps, `embodied-r eval` in its --out folder"
    )


def build_view(source: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Writes the viewer of `source` (a run dir, an eval folder or a samples/ folder) to `out` (default
    <source>/view); returns the path of index.html. Incremental: a page's data and a video's thumbnails are copied
    again only when their source changed, so rebuilding a live run's viewer is cheap."""
    from cluster.samples import read_index

    folder = samples_folder(source)
    root = folder.parent if folder.name == "samples" else folder
    out = Path(out) if out is not None else root / "view"
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    pages = sorted(read_index(folder), key=lambda p: (p["step"], p["kind"] != "train", p["id"]))
    metrics_path = root / "metrics.jsonl"
    metrics = _metrics_by_step(metrics_path)
    metrics_mtime = metrics_path.stat().st_mtime if metrics_path.is_file() else 0.0

    wanted = set()
    for summary in pages:
        source_page = folder / "pages" / f"{summary['id']}.json"
        target = out / "data" / f"{summary['id']}.js"
        wanted.add(target.name)
        if target.is_file() and target.stat().st_mtime >= max(source_page.stat().st_mtime, metrics_mtime):
            continue
        page = json.loads(source_page.read_text(encoding="utf-8"))
        if page["step"] in metrics and page["kind"] == "train":
            page["metrics"] = metrics[page["step"]]  # metrics.jsonl is the run's record of the row
        write_text_atomically(target, f"window.ER_PAGE({json.dumps(page, ensure_ascii=False)});\n")
    for stale in (out / "data").glob("*.js"):
        if stale.name not in wanted:  # a page thinned away (or a step run again and dropped)
            stale.unlink()
    videos = {key for p in pages for key in p["videos"]}
    for key in videos:
        _copy_frames(folder / "frames" / key, out / "frames" / key)

    index = {"title": title or f"Embodied-R samples: {root.resolve().name}", "pages": pages}
    html = template().replace("__ER_TITLE__", _html_text(index["title"])).replace("/*__ER_INDEX__*/null", _script_json(index))
    return write_text_atomically(out / "index.html", html)


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _copy_frames(source: Path, target: Path) -> None:
    if not source.is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    for image in source.glob("*.jpg"):
        copy = target / image.name
        if not copy.is_file() or copy.stat().st_size != image.stat().st_size:
            shutil.copyfile(image, copy)


def make_server(source: str | Path, out: Path, port: int):
    """An HTTP server of the viewer on 127.0.0.1:`port` (0: a free one) that rebuilds it whenever index.html is
    requested, so a live run's new steps appear on reload; not started."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0].split("#")[0] in ("/", "/index.html"):
                build_view(source, out)
            super().do_GET()

        def log_message(self, format: str, *args) -> None:  # quiet: one line per page would drown the run's log
            log.debug(format, *args)

    return ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(out)))


def serve(source: str | Path, out: Path, port: int) -> None:
    """Serves the viewer on 127.0.0.1:`port` until interrupted (make_server)."""
    server = make_server(source, out, port)
    print(f"serving {out} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _run(args: argparse.Namespace) -> int:
    source = Path(args.run_dir)
    folder = samples_folder(source)
    root = folder.parent if folder.name == "samples" else folder
    out = Path(args.out) if args.out else root / "view"
    index = build_view(source, out)
    print(f"viewer: {index} (open it in a browser; it reads only the files beside it)")
    if args.serve is not None:
        serve(source, out, args.serve)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view",
        description="Build a static, self-contained HTML viewer of the samples a run recorded in RUN_DIR/samples "
        "(trainer.samples_every) or `embodied-r eval` wrote in its --out folder: per step, the key-frame strip with the "
        "VLM's caption beside each frame, the G completions side by side with their reward terms, and a table sortable "
        "by reward or length; filters by step, category, reward and correctness (kept in the URL hash).",
        epilog="Example: embodied-r view runs/tiny && xdg-open runs/tiny/view/index.html; "
        "embodied-r view runs/tiny --serve 8000 follows a live run.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run dir, an eval --out folder, or a samples/ folder")
    parser.add_argument("--out", metavar="DIR", help="where to write the viewer (default RUN_DIR/view)")
    parser.add_argument("--serve", type=int, metavar="PORT", default=None,
                        help="also serve it on 127.0.0.1:PORT, rebuilt on every load (0 picks a free port)")
    parser.set_defaults(func=_run)
