"""``python -m dag_core.shards verify DIR...``: report whether each dataset is whole."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dag_core.shards.integrity import dataset_problems, find_datasets, read_manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m dag_core.shards verify DIR...``: report whether each dataset is whole.

    DIR may be one dataset or a folder of them (e.g. ``data/synthetic``). Prints one ``ok`` line
    per whole dataset and one line per problem; ends with one ``error:`` line on stderr and exit
    status 2 if any dataset is incomplete or damaged.
    """
    parser = argparse.ArgumentParser(prog="python -m dag_core.shards")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check datasets against their manifests")
    verify.add_argument("dirs", nargs="+", help="a dataset folder, or a folder of datasets")
    args = parser.parse_args(argv)
    bad: list[str] = []
    for root in args.dirs:
        datasets = find_datasets(root) or [Path(root)]
        for directory in datasets:
            problems = dataset_problems(directory)
            if problems:
                bad.append(f"{directory}: {problems[0]}")
                for line in problems:
                    print(f"BAD  {directory}: {line}")
            else:
                m = read_manifest(directory) or {}
                print(
                    f"ok   {directory}: {len(m['shards'])} shard(s), {m['total_rows']} rows, "
                    f"depth {m['depth_dtype']}"
                )
    if bad:
        more = f" (and {len(bad) - 1} more dataset(s))" if len(bad) > 1 else ""
        print(f"error: {bad[0]}{more}", file=sys.stderr)
        return 2
    return 0
