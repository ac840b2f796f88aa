"""``python -m dashboards render | check | push``: the same as ``ironsight dashboards …``."""

from __future__ import annotations

import argparse
import logging
import sys

from core.settings import Settings
from dashboards.cli import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboards", *(sys.argv[1:] if argv is None else argv)])
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
