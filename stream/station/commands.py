"""The ``station`` and ``eval count`` subcommands: their arguments and what they print.

``stream/cli.py`` adds these parsers and calls the ``cmd_*`` functions with the loaded config; a
``ValueError`` from here is a user error (one line, exit 2 there). Building the parsers imports
nothing heavy (``--help`` stays fast); the commands import their stages when they run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from stream.config import Config

Common = Callable[[argparse.ArgumentParser], None]
Command = Callable[[argparse.Namespace], int]


def add_station_parsers(sub: argparse._SubParsersAction, common: Common, create: Command, info: Command) -> None:
    """``station create`` and ``station info``, calling ``create`` and ``info``."""
    st = sub.add_parser("station", help="onboard a station (empty-station profile, zones) or show one")
    actions = st.add_subparsers(dest="station_command", required=True, metavar="ACTION")
    p = actions.add_parser("create", help="write a station profile from frames of the empty station")
    p.add_argument("dir", type=Path, help="station folder to write")
    p.add_argument(
        "--empty",
        type=Path,
        required=True,
        metavar="VIDEO_OR_IMAGES",
        help="the empty station: a video, an image or a folder of images",
    )
    p.add_argument("--frames", metavar="RANGES", help="only these 0-based frames of --empty, e.g. '24-36'")
    p.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar='"x1,y1 x2,y2 ..."',
        help="a counting polygon in source pixels (repeatable; default: the whole frame)",
    )
    p.add_argument(
        "--catalog-photos",
        type=Path,
        metavar="DIR",
        help="product photos for fitting (--minutes); default: the grocery packshots",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="also fit the segmenter to this station for N minutes (needs the export extra: torch)",
    )
    p.add_argument(
        "--check",
        type=Path,
        metavar="VIDEO_OR_IMAGES",
        help="validate on this clip or folder with known counts (--check-counts)",
    )
    p.add_argument("--check-counts", metavar="SPEC", help="known counts per frame index, e.g. '3-21:1,25-36:0'")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    common(p)
    p.set_defaults(func=create)
    p = actions.add_parser("info", help="print a station profile's card")
    p.add_argument("dir", type=Path, help="station folder")
    p.set_defaults(func=info)


def cmd_station_create(args: argparse.Namespace, cfg: Config) -> int:
    from stream.eval.count import parse_select
    from stream.stages.zones import Zone, parse_polygon
    from stream.station.onboard import create_station, station_info

    zones = tuple(Zone(f"zone{i + 1}", parse_polygon(z)) for i, z in enumerate(args.zone))
    info = create_station(
        args.dir,
        args.empty,
        segment_cfg=cfg.segment,
        boxes_cfg=cfg.boxes,
        track_cfg=cfg.track,
        frames=parse_select(args.frames),
        zones=zones,
        catalog_photos=args.catalog_photos,
        minutes=args.minutes,
        check=args.check,
        check_counts_text=args.check_counts,
        progress=not args.quiet,
    )
    print(station_info(args.dir))
    print(
        f"station profile written to {args.dir} ({len(info.get('zones', []))} zones); "
        f"use it with: checkout-stream run SOURCE --station {args.dir}"
    )
    return 0


def cmd_station_info(args: argparse.Namespace) -> int:
    from stream.station.onboard import station_info

    print(station_info(args.dir))
    return 0


def add_eval_count_parser(ev: argparse._SubParsersAction, common: Common, count: Command) -> None:
    """``eval count``, calling ``count``."""
    p = ev.add_parser("count", help="items counted per image vs a known count; mask pixels (hands) called item")
    p.add_argument(
        "--images",
        type=Path,
        action="append",
        required=True,
        help="folder of images, searched recursively (repeatable)",
    )
    p.add_argument("--count", type=int, help="every image shows exactly this many items")
    p.add_argument(
        "--masks",
        type=Path,
        action="append",
        default=[],
        help="PNG masks (image stems) of pixels that are never items, e.g. hands; one per --images",
    )
    p.add_argument("--select", metavar="RANGES", help="only images with these numeric stems, e.g. '11-20,76-100'")
    p.add_argument(
        "--on-mask-frac",
        type=float,
        help="an item lies on the mask when at least this share of its pixels does (default 0.5)",
    )
    p.add_argument("--station", type=Path, metavar="DIR", help="count through this station profile")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common(p)
    p.set_defaults(func=count)


def cmd_eval_count(args: argparse.Namespace, cfg: Config) -> int:
    from stream.eval.count import ON_MASK_FRAC, eval_count, format_table, parse_select, product_stages
    from stream.station import use

    station = use.load(cfg)
    segment, extract, identity = product_stages(
        use.segment_config(cfg, station), cfg.boxes, cfg.track, station, use.zones(cfg, station)
    )
    result = eval_count(
        args.images,
        segment,
        extract,
        count=args.count,
        masks=args.masks,
        select=parse_select(args.select),
        on_mask_frac=ON_MASK_FRAC if args.on_mask_frac is None else args.on_mask_frac,
        progress=not args.json,
    )
    result["model"] = identity
    result["station"] = str(station.root) if station is not None else None
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
