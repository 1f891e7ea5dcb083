"""The command line: the only place that reads the environment, owns the terminal and sets up logging.

Known failures (bad config, missing model, bad source, catalog from another embedder...) end with one
line on stderr and exit 2; anything unexpected ends with one line and exit 1 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stream.config import Config, ConfigError, load_config
from stream.station.commands import add_eval_count_parser, add_station_parsers

log = logging.getLogger("checkout-stream")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class CliError(RuntimeError):
    """A user-facing failure that needs one line, not a traceback."""


def _known_errors() -> tuple[type[BaseException], ...]:
    from stream.sinks import SinkError
    from stream.sources.file import SourceError
    from stream.stages.catalog import CatalogError
    from stream.stages.onnx_model import ModelError
    from stream.stages.station import StationError

    return (ConfigError, CliError, ModelError, CatalogError, SinkError, SourceError, StationError, OSError)


# ------------------------------------------------------------------------------------- building

# Secrets a deployment keeps out of config files: environment variable -> config key.
ENV_SECRETS = (
    ("CHECKOUT_STREAM_MQTT_USERNAME", "events.mqtt.username"),
    ("CHECKOUT_STREAM_MQTT_PASSWORD", "events.mqtt.password"),
    ("CHECKOUT_STREAM_WEBHOOK_TOKEN", "events.webhook.token"),
)


def _config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    return load_config(getattr(args, "config", None), _overrides(args, extra))


def _overrides(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config keys the command line sets (flags, and secrets from the environment)."""
    overrides: dict[str, Any] = dict(extra or {})
    if getattr(args, "lane", None):
        overrides["lane.name"] = args.lane
    if getattr(args, "realtime", False):
        overrides["source.realtime"] = True
    if getattr(args, "events", None):
        overrides["events.sinks"] = list(args.events)
    if getattr(args, "http", None):
        overrides["http.bind"] = args.http
    if getattr(args, "station", None):
        overrides["station.path"] = str(args.station)
    if getattr(args, "provider", None):
        overrides["segment.model.provider"] = args.provider
        overrides["classify.model.provider"] = args.provider
    token = os.environ.get("CHECKOUT_STREAM_TOKEN")
    if token:
        overrides["events.token"] = token
    for env, key in ENV_SECRETS:
        if os.environ.get(env):
            overrides[key] = os.environ[env]
    return overrides


def _run(
    args: argparse.Namespace,
    cfg: Config,
    open_source: Callable,
    photos: dict | None = None,
    default_record: Path | None = None,
) -> int:
    from stream.app import RunOptions, run
    from stream.stats import write_summary

    stop = _stop_on_signals()
    record = args.record or (None if not args.no_display and _display() else default_record)
    options = RunOptions(
        catalog=getattr(args, "catalog", None),
        photos=photos,
        record=Path(record) if record else None,
        display=not args.no_display,
        frames_log=args.frames_log,
    )
    summary = run(cfg, open_source, options, stop)
    write_summary(summary, sys.stderr)
    return EXIT_OK


def _stop_on_signals() -> threading.Event:
    """A flag SIGINT and SIGTERM set (the run stops within runtime.shutdown_timeout_s)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return stop


def _run_lanes(args: argparse.Namespace) -> int:
    from stream.config import load_lanes
    from stream.lanes import run_lanes
    from stream.stats import write_summary

    if args.source is not None:
        raise CliError("give either a SOURCE or --lanes FILE (each lane names its source), not both")
    if args.record:
        raise CliError("--record records one lane; with --lanes, watch each lane with --http at /live?lane=NAME")
    if args.lane:
        raise CliError("--lane names one lane; with --lanes, each lane's name is its 'name:' in the lanes file")
    lanes = load_lanes(args.lanes, getattr(args, "config", None), _overrides(args))
    for lane in lanes:
        folder = lane.catalog or args.catalog
        if folder is not None and not Path(folder).is_dir():
            raise CliError(
                f"lane {lane.name}: catalog {folder} is not a folder (build one: checkout-stream catalog build)"
            )
    stop = _stop_on_signals()
    summaries = run_lanes(lanes, stop, catalog=args.catalog, frames_log=args.frames_log)
    for name, summary in summaries.items():
        print(f"lane {name}:", file=sys.stderr)
        if "error" in summary:
            print(f"  did not run: {summary['error']}", file=sys.stderr)
        else:
            write_summary(summary, sys.stderr)
    return EXIT_OK if any("error" not in s for s in summaries.values()) else EXIT_USAGE


def _display() -> bool:
    from stream.outputs.display import display_available

    return display_available()


# ------------------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from stream.sources.file import open_source

    if args.lanes is not None:
        return _run_lanes(args)
    if args.source is None:
        raise CliError("give a SOURCE (a file, URL or camera) or --lanes FILE")
    cfg = _config(args)
    if args.catalog is not None and not Path(args.catalog).is_dir():
        raise CliError(f"catalog {args.catalog} is not a folder (build one: checkout-stream catalog build)")
    return _run(args, cfg, lambda on_status, stop: open_source(args.source, cfg.source, on_status, stop))


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.sources.demo import SceneSource, demo_photos
    from stream.synthetic.scene import CheckoutScene

    cfg = _config(args)
    scene = CheckoutScene(seed=args.seed, duration_s=args.duration)
    default_record = Path(args.record) if args.record else Path(tempfile.gettempdir()) / "checkout-stream-demo.mp4"
    return _run(
        args,
        cfg,
        lambda _on_status, stop: SceneSource(scene, realtime=not args.fast, loop=args.loop, stop=stop),
        photos=demo_photos(),
        default_record=default_record,
    )


def _vectors(info: dict[str, Any]) -> str:
    views = "each photo whole and its item" if info.get("item_views") else "one per photo"
    return f"{info.get('vectors')} vectors ({views})"


def cmd_catalog_build(args: argparse.Namespace) -> int:
    from stream.app import catalog_item_crop
    from stream.stages.catalog import Catalog
    from stream.stages.embed import Embedder

    cfg = _config(args)
    embedder = Embedder(cfg.classify.model)
    catalog = Catalog.build(
        Path(args.photos), embedder, cfg.catalog, progress=not args.quiet, crop=catalog_item_crop(cfg)
    )
    catalog.save(Path(args.output))
    info = catalog.info()
    print(f"catalog {args.output}: {info.get('products')} products, {_vectors(info)}")
    return EXIT_OK


def cmd_catalog_add(args: argparse.Namespace) -> int:
    from stream.app import catalog_item_crop
    from stream.stages.catalog import Catalog
    from stream.stages.embed import Embedder

    cfg = _config(args)
    embedder = Embedder(cfg.classify.model)
    catalog = Catalog.load(Path(args.catalog), embedder, cfg.catalog, crop=catalog_item_crop(cfg))
    catalog.add(Path(args.photos), embedder)
    catalog.save(Path(args.catalog))
    info = catalog.info()
    print(f"catalog {args.catalog}: {info.get('products')} products, {_vectors(info)}")
    return EXIT_OK


def cmd_catalog_info(args: argparse.Namespace) -> int:
    manifest = Path(args.catalog) / "manifest.json"
    sidecar = Path(args.catalog) / "catalog.json"
    if not manifest.is_file() or not sidecar.is_file():
        raise CliError(f"{args.catalog} is not a catalog (no manifest.json/catalog.json)")
    info = json.loads(manifest.read_text())
    print(json.dumps(info, indent=2))
    return EXIT_OK


def cmd_eval_catalog(args: argparse.Namespace) -> int:
    from stream.app import catalog_item_crop
    from stream.eval.catalog import eval_catalog, format_table

    cfg = _config(args)
    crop = catalog_item_crop(cfg)
    result = eval_catalog(
        Path(args.gallery),
        Path(args.queries),
        cfg.classify,
        cfg.catalog,
        progress=not args.json,
        crop=crop,
        query_crop=(crop or catalog_item_crop(cfg, always=True)) if args.query_crops else None,
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    if args.plot is not None:
        from stream.eval.catalog import plot_open_set

        try:
            plot_open_set(result, args.plot)
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'checkout-stream[dev]'") from None
        except ValueError as exc:
            raise CliError(f"--plot: {exc}") from None
        print(f"open-set sweep plotted to {args.plot}", file=sys.stderr)
    return EXIT_OK


def cmd_station_create(args: argparse.Namespace) -> int:
    from stream.station import commands

    return commands.cmd_station_create(args, _config(args, {"station.path": ""}))


def cmd_station_info(args: argparse.Namespace) -> int:
    from stream.station import commands

    return commands.cmd_station_info(args)


def cmd_eval_count(args: argparse.Namespace) -> int:
    from stream.station import commands

    return commands.cmd_eval_count(args, _config(args))


def cmd_eval_segment(args: argparse.Namespace) -> int:
    from stream.eval.segment import eval_segment, format_table

    cfg = _config(args)
    result = eval_segment(Path(args.images), Path(args.masks), cfg.segment, cfg.boxes, progress=not args.json)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return EXIT_OK


# ------------------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML file overriding configs/default.yaml")
    p.add_argument(
        "--provider",
        choices=("auto", "tensorrt", "cuda", "cpu"),
        help="ONNX Runtime provider for both models (default: from config, auto)",
    )


def _live(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-display", action="store_true", help="never open a window")
    p.add_argument("--record", metavar="FILE", help="write the annotated video to FILE (.mp4)")
    p.add_argument(
        "--events",
        metavar="SPEC",
        action="append",
        help="event sink: stdout, tcp://127.0.0.1:PORT, jsonl:FILE, mqtt://HOST:PORT[/PREFIX] or "
        "https://HOST/PATH (webhook) (repeatable; default stdout)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve /healthz /readyz /metrics /live there (127.0.0.1:8080; other hosts need "
        "events.token or CHECKOUT_STREAM_TOKEN)",
    )
    p.add_argument(
        "--frames-log",
        metavar="FILE",
        type=Path,
        help="one JSON line per processed frame: times, frame age, confirmed tracks",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkout-stream",
        description="Segment, track and recognise items on a checkout counter from a camera, file or RTSP URL.",
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="process a video file, RTSP/HTTP URL or USB camera")
    p.add_argument("source", nargs="?", help="video file, rtsp://..., http(s)://..., camera index (0) or /dev/videoN")
    p.add_argument(
        "--lanes",
        metavar="FILE",
        type=Path,
        help="run many lanes in this process: YAML 'lanes: [{name, source, station?, catalog?, zone?, "
        "<config section>: {...}}]' (shared models, one HTTP server, events and frames log name the lane)",
    )
    p.add_argument("--lane", metavar="NAME", help="this lane's name on its events and metrics (lane.name)")
    p.add_argument("--catalog", metavar="DIR", type=Path, help="catalog built with `catalog build`")
    p.add_argument("--realtime", action="store_true", help="pace files at their own frame rate, like a camera")
    p.add_argument("--station", metavar="DIR", type=Path, help="station profile made by `station create`")
    _common(p)
    _live(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run on a built-in synthetic checkout scene (needs nothing else)")
    p.add_argument("--loop", action="store_true", help="repeat the scene until interrupted")
    p.add_argument("--fast", action="store_true", help="process as fast as possible instead of at 30 fps")
    p.add_argument("--duration", type=float, default=60.0, metavar="S", help="scene length in seconds (60)")
    p.add_argument("--seed", type=int, default=0, help="scene variant (0)")
    _common(p)
    _live(p)
    p.set_defaults(func=cmd_demo)

    cat = sub.add_parser("catalog", help="build, extend or inspect a product catalog").add_subparsers(
        dest="catalog_command", required=True, metavar="ACTION"
    )
    p = cat.add_parser("build", help="embed PHOTOS/<product>/*.jpg (or PHOTOS/<product>.jpg) into a catalog")
    p.add_argument("photos", help="folder of product photos")
    p.add_argument("-o", "--output", required=True, help="catalog folder to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_catalog_build)
    p = cat.add_parser("add", help="add products or photos to a catalog without a rebuild")
    p.add_argument("catalog", help="existing catalog folder")
    p.add_argument("photos", help="folder of product photos to add")
    _common(p)
    p.set_defaults(func=cmd_catalog_add)
    p = cat.add_parser("info", help="print a catalog's manifest")
    p.add_argument("catalog", help="catalog folder")
    p.set_defaults(func=cmd_catalog_info)

    ev = sub.add_parser("eval", help="measure recognition or segmentation on your data").add_subparsers(
        dest="eval_command", required=True, metavar="WHAT"
    )
    p = ev.add_parser("catalog", help="top-1/top-5 of the embedder + catalog")
    p.add_argument("--gallery", required=True, help="DIR/<product>/*.jpg or DIR/<product>.jpg (the catalog)")
    p.add_argument("--queries", required=True, help="DIR/<product>/*.jpg (photos to recognise)")
    p.add_argument(
        "--query-crops",
        action="store_true",
        help="cut each query photo to its largest item first (the segmenter), as the runtime crops items",
    )
    p.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="draw the open-set threshold/margin sweep there (queries must hold products absent from the gallery)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(func=cmd_eval_catalog)
    p = ev.add_parser("segment", help="foreground IoU, instance precision/recall, touching-pair separation")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--masks", required=True, help="instance-mask PNGs with the images' file stems")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(func=cmd_eval_segment)
    add_eval_count_parser(ev, _common, cmd_eval_count)
    add_station_parsers(sub, _common, cmd_station_create, cmd_station_info)
    return parser


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        stream=sys.stderr,
        format="checkout-stream: %(levelname)s: %(message)s",
    )
    for noisy in ("numba", "faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        known = isinstance(exc, _known_errors())
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if known else f" ({type(exc).__name__}; run with --debug for details)"
        print(f"checkout-stream: error: {text}{hint}", file=sys.stderr)
        return EXIT_USAGE if known else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
