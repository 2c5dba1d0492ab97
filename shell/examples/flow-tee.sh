#!/usr/bin/env bash
# A shell flow: a pipeline and a tee(1) fan-out recorded as one call graph.
#
# `ec flow begin` creates a flow and prints `export EC_FLOW=<id>`; every `ec run` / `ec map`
# in this shell then joins it. A call whose stdin is a pipe from another `ec run` of the
# flow becomes that call's child; the rest hang under the flow itself. Needs the seed's
# network and a worker, as seed-pipes.sh does. Results on stdout, the graph on stderr.
set -euo pipefail

DO_SOMETHING=pyfi.processors.sample.do_something
DO_THIS=pyfi.processors.sample.do_this

eval "$(ec flow begin --label flow-tee.sh)"
trap 'eval "$(ec flow end)"' EXIT

# a pipeline: do_this gets do_something's result, and is its child in the graph
echo "HI THERE!" | ec run "$DO_SOMETHING" | ec run "$DO_THIS"

# a fan-out: both branches run in parallel, both children of the flow
{ echo "HI THERE!" | tee >(ec run "$DO_SOMETHING") >(ec run "$DO_THIS") >/dev/null; } | cat

# one call per line, in the same flow
seq 3 | ec map "$DO_THIS"

ec ls call --id "$EC_FLOW" -g >&2
