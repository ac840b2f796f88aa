"""``ironsight dashboards render | check | push``: the dashboards' command line.

``add_parser`` adds the ``dashboards`` subcommand to the ``ironsight`` parser; each handler takes
``(args, settings)`` and returns the exit status, like the other ``ironsight`` subcommands.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from core.settings import Settings
from dashboards.constants import FOLDER_TITLE, FOLDER_UID

READER_ROLE = "ironsight_grafana"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("dashboards", help="Grafana dashboards: write the JSON, check the queries, "
                                                      "upload to a Grafana")
    sub = parser.add_subparsers(dest="dashboards_command", required=True)

    render = sub.add_parser("render", help="write dashboards/json/*.json from the Python definitions")
    render.add_argument("--out", type=Path, default=None, help="directory (default: dashboards/json)")
    render.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    render.set_defaults(handler=cmd_render)

    check = sub.add_parser("check", help="run every dashboard query on the database as Grafana would")
    check.add_argument("--hours", type=float, default=6.0, help="time range ending now (default 6)")
    check.add_argument("--role", default=None,
                       help=f"run as this role, e.g. {READER_ROLE} (needs membership or a superuser)")
    check.add_argument("--timescaledb", choices=("auto", "on", "off"), default="auto",
                       help="expand $__timeGroup as with the data source's TimescaleDB toggle (default: detect)")
    check.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                       help="choose a variable's value wherever a dashboard has it, e.g. --var equipment=EX-1 "
                            "(default: All, or the first option)")
    check.add_argument("--require-rows", action="store_true",
                       help="a query that returns no rows fails (on a live fleet, a quiet machine has none)")
    check.set_defaults(handler=cmd_check)

    push = sub.add_parser("push", help="upload the data source and dashboards to Grafana (idempotent)")
    push.add_argument("--url", required=True, help="Grafana's URL, e.g. http://localhost:3000")
    push.add_argument("--token", default=os.environ.get("GRAFANA_TOKEN"),
                      help="service account token (default: $GRAFANA_TOKEN); or user:password in --url")
    push.add_argument("--datasource-url", default=os.environ.get("IRONSIGHT_GRAFANA_DATABASE_URL"),
                      help="the database as Grafana's server reaches it, with the read-only login: "
                           "postgresql://grafana:PASSWORD@HOST:5432/ironsight "
                           "(default: $IRONSIGHT_GRAFANA_DATABASE_URL); omit to leave the data source alone")
    push.add_argument("--timescaledb", choices=("auto", "on", "off"), default="auto",
                      help="the data source's TimescaleDB toggle (default: detect through the data source URL, "
                           "else IRONSIGHT_DATABASE_URL)")
    push.add_argument("--folder", default=FOLDER_TITLE, help=f"folder title (default {FOLDER_TITLE}; "
                                                            f"uid {FOLDER_UID})")
    push.set_defaults(handler=cmd_push)
    return parser


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    from dashboards import render

    directory = args.out or render.JSON_DIR
    if args.check:
        stale = render.stale(directory)
        for name in stale:
            print(f"stale: {directory / name}")
        return 1 if stale else 0
    for path in render.write(directory):
        print(path)
    return 0


def _timescaledb(choice: str, *urls: str | None) -> bool:
    if choice != "auto":
        return choice == "on"
    from dashboards.push import detect_timescaledb

    errors = []
    for url in urls:
        if not url:
            continue
        try:
            return detect_timescaledb(url)
        except Exception as exc:  # unreachable from here: try the next, then ask
            errors.append(f"{url.split('@')[-1]}: {exc}")
    raise SystemExit("cannot tell whether the database has TimescaleDB (" + "; ".join(errors or ["no URL"])
                     + "); say --timescaledb on or off")


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from core.db import connect
    from dashboards.grafana_macros import TimeRange
    from dashboards.render import dashboards
    from dashboards.verify import check_dashboards

    if not settings.database_url:
        raise SystemExit("IRONSIGHT_DATABASE_URL is not set")
    timescaledb = _timescaledb(args.timescaledb, settings.database_url)
    chosen = dict(v.split("=", 1) for v in args.var if "=" in v)
    rendered = dashboards()
    choices = {d["uid"]: {name: value for name, value in chosen.items()
                          if any(v["name"] == name for v in d["templating"]["list"])} for d in rendered}
    with connect(settings.database_url, application_name="ironsight-dashboards-check") as conn:
        results = check_dashboards(conn, rendered, TimeRange.last(timedelta(hours=args.hours)),
                                   timescaledb=timescaledb, role=args.role, choices=choices,
                                   require_rows=args.require_rows)
    failed = [r for r in results if r.problems]
    for result in results:
        print(("FAIL " if result.problems else "ok   ") + str(result))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    from dashboards.push import DatabaseTarget, PushError, datasource_payload, push
    from dashboards.render import dashboards

    datasource = None
    if args.datasource_url:
        target = DatabaseTarget.from_url(args.datasource_url)
        timescaledb = _timescaledb(args.timescaledb, args.datasource_url, settings.database_url)
        datasource = datasource_payload(target, timescaledb=timescaledb)
    try:
        report = push(args.url, args.token, dashboards=dashboards(), datasource=datasource,
                      folder_title=args.folder)
    except PushError as exc:
        print(f"ironsight dashboards push: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0
