"""python -m salbench.config methods | metrics | check [PARAMS]: list declared params, or validate a file."""
from __future__ import annotations

import argparse

from ..errors import cli
from .validate import check_params_file, listing


@cli
def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m salbench.config", description=__doc__)
    ap.add_argument("what", choices=["methods", "metrics", "check"])
    ap.add_argument("params", nargs="?", default="params.yaml", help="the file `check` validates")
    args = ap.parse_args()
    if args.what == "check":
        check_params_file(args.params)
        print(f"{args.params}: ok")
    else:
        print(listing(args.what))


if __name__ == "__main__":
    main()
