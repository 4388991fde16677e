"""`python -m bench [all|overhead|leases|upload|embedding|search|retrieval|ocr] [--quick]`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.harness import (
    Context,
    Stopwatch,
    fsync_line,
    load_line,
    machine_description,
    render_table,
)
from bench.postgres import server_version

BENCHMARKS = (
    "overhead",
    "leases",
    "upload",
    "embedding",
    "search",
    "retrieval",
    "ocr",
    "memory",
    "scale",
    "quota",
)
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)
    setting = "full" if args.full else "quick"
    print(f"# Sheaf benchmarks ({setting})\n")
    print(f"command: `python -m bench {shlex.join(sys.argv[1:] if argv is None else argv)}`\n")
    machine = machine_description(server_version(args.postgres))
    print(render_table("machine", ["what", "value"], machine))
    total = Stopwatch()
    failures = []
    with tempfile.TemporaryDirectory(prefix="sheaf-bench-") as tmp:
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            workdir = Path(tmp) / name
            workdir.mkdir()
            ctx = Context(setting, workdir, args.postgres, args.profile)
            print(f"## {module.TITLE}\n")
            print(load_line("start") + "\n", flush=True)
            print(fsync_line("start", workdir) + "\n", flush=True)
            clock = Stopwatch()
            try:
                asyncio.run(module.run(ctx))
            except Exception:  # a benchmark that breaks is reported; the others still run
                failures.append(name)
                print(f"**{name} did not finish:**\n\n```\n{traceback.format_exc()}```\n")
            print(fsync_line("end", workdir) + "\n")
            print(load_line("end") + f"; {name} took {clock.seconds:.0f} s\n", flush=True)
    print(f"all done in {total.seconds:.0f} s at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    if failures:
        print(f"benchmarks that did not finish: {', '.join(failures)}")
    return 0  # benchmarks measure; they never fail a build


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Sheaf's benchmarks; see docs/benchmarks.md for what each measures.",
    )
    parser.add_argument("benchmark", nargs="?", default="all", choices=("all", *BENCHMARKS))
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, a few minutes (default)")
    size.add_argument("--full", action="store_true", help="the sizes docs/benchmarks.md reports")
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        metavar="DSN",
        help=f"libpq DSN of a database to create fresh benchmark databases from "
        f"[{DEFAULT_POSTGRES}]",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="write pyinstrument profiles of the measured code into DIR (slows it down)",
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
