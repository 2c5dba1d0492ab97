#!/usr/bin/env bash
# ec map like GNU parallel: one call per line, results in input order, a joblog, --resume.
#
# Needs the seed's network and a worker, as seed-pipes.sh does. Results on stdout.
set -euo pipefail

DO_THIS=pyfi.processors.sample.do_this
log=$(mktemp "${TMPDIR:-/tmp}/ec-joblog.XXXXXX")
trap 'rm -f "$log"' EXIT

# ten lines, at most four between read and written, a joblog of what ran
seq 10 | ec map -j 4 --joblog "$log" "$DO_THIS"

# the same input grown by two lines: --resume runs only lines 11 and 12
seq 12 | ec map --joblog "$log" --resume "$DO_THIS"

# the joblog in GNU parallel's format: Seq Host Starttime JobRuntime Send Receive Exitval ...
cut -f1,7,9 "$log" >&2

# results as they finish rather than in order, and stop at the first failure
seq 5 | ec map --unordered --halt now,fail=1 "$DO_THIS" | sort -V
