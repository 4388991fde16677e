"""Sheaf's benchmarks: how close it runs to the limit, side by side with the alternatives.

Run them with `python -m bench [all|overhead|leases|upload|embedding|search] [--quick|--full]`
(`make bench` runs all of them with the quick setting). Each benchmark lives in its own
module, prints Markdown tables with the ratio to its reference, and prints the machine's
load averages when it starts and ends, because numbers from a busy machine are not numbers
from an idle one. `docs/benchmarks.md` records the results and what they mean.

Benchmarks measure; they never fail the build. A missing service (PostgreSQL, Azurite)
skips the rows that need it, with the reason printed in their place. pytest never collects
this package (its testpaths is `tests/`).
"""
