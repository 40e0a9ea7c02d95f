"""`fmnist data info|fetch|export-csv`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fmnist.cli.common import Parser, progress_enabled


def cmd_info(args: argparse.Namespace) -> int:
    from fmnist.data.info import describe_data

    description = describe_data(args.data, download=not args.no_download, progress=progress_enabled(args))
    if args.format == "json":
        print(json.dumps(description, indent=2))
        return 0
    print(f"source   {description['root']}  ({description['origin_text']})")
    for split, info in description["splits"].items():
        if info is None:
            print(f"{split:<8} not present")
            continue
        status = (
            "official Fashion-MNIST content"
            if info["official"]
            else "differs from the official release (custom or modified data)"
        )
        names = ", ".join(Path(p).name for p in info["files"])
        print(f"{split:<8} {info['images']:,} images, {info['format'].upper()}: {names}")
        print(f"{'':<8} checksum: {status} (content digest {info['content_digest'][:16]}...)")
        balance = ", ".join(f"{name} {count:,}" for name, count in info["class_counts"].items())
        print(f"{'':<8} classes: {balance}")
    names = description["class_names"]
    named_by = f" (from {description['classes_file']})" if description["classes_file"] else ""
    print(f"classes  {len(names)}: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}{named_by}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from fmnist.data.download import download_official
    from fmnist.data.locate import cache_data_dir, system_data_dirs

    folder = cache_data_dir()
    for line in download_official(folder, progress=progress_enabled(args), local_copies=system_data_dirs()):
        print(line)
    print(f"verified copy in {folder}")
    return 0


def cmd_export_csv(args: argparse.Namespace) -> int:
    from fmnist.data import locate_data
    from fmnist.data.export_csv import export_csv

    for path in export_csv(locate_data(args.data, progress=progress_enabled(args)), Path(args.folder)):
        print(f"wrote {path}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="find, check, fetch and export the dataset")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser)
    actions.required = True
    info = actions.add_parser("info", help="where the data comes from, counts, class balance, checksums")
    info.add_argument("--data", metavar="PATH", help="IDX/CSV folder, image folder (train/<class>/*.png, test/<class>/...) or a .csv/.npz file; a classes.txt next to it names the classes (default: search)")
    info.add_argument("--format", choices=["text", "json"], default="text")
    info.add_argument("--no-download", action="store_true", help="fail instead of downloading when no copy is found")
    info.set_defaults(handler=cmd_info)
    fetch = actions.add_parser("fetch", help="put a verified copy of the official files in the cache")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=cmd_fetch)
    export = actions.add_parser("export-csv", help="write Kaggle-layout CSVs into a folder")
    export.add_argument("folder", metavar="DIR")
    export.add_argument("--data", metavar="PATH")
    export.set_defaults(handler=cmd_export_csv)
