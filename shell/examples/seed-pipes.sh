#!/usr/bin/env bash
# The seed's shell recipes with ElasticCode: a task fed from a pipe, a pipeline of two
# tasks with shell text in between, and a tee(1) fan-out running two tasks in parallel.
#
# Needs `ec` on PATH, the seed's network (`ec demo` builds it: queue pyfi.queue1,
# processor proc1, sockets pyfi.processors.sample.do_something and .do_this), and a worker
# serving proc1 (an agent, or `ec worker -p proc1 &`); without one the calls wait, durably,
# in their queue. Results go to stdout, the recipe titles to stderr.
set -euo pipefail

DO_SOMETHING=pyfi.processors.sample.do_something
DO_THIS=pyfi.processors.sample.do_this

# Fail with one clear line (exit 2) if the network has not been built yet.
ec show socket "$DO_SOMETHING" >/dev/null
ec show socket "$DO_THIS" >/dev/null

# The seed defines aliases named after the sockets; `ec shell aliases` prints a function
# per socket that does the same in a script (bash accepts dots in function names), e.g.
#   pyfi.processors.sample.do_something() { ec run pyfi.processors.sample.do_something "$@"; }
eval "$(ec shell aliases --shell bash)"

title() { printf '\n# %s\n' "$*" >&2; }

title "Pipe some output from stdin to a task"
echo "HI THERE!" | pyfi.processors.sample.do_something

title "Pipe text to a task, append some text to its output, send that to do_this"
echo "HI THERE!" | pyfi.processors.sample.do_something | echo "$(cat -) add some text" | pyfi.processors.sample.do_this

title "Echo a string to two tasks at once with tee: they run in parallel"
# The seed writes `tee -a >(A) tee -a >(B)`, which also hands tee a file named "tee";
# this is the working form. The braces and `| cat` make the script wait for both
# branches (bash's `wait` does not wait for process substitutions). The two results
# arrive in whichever order the tasks finish.
{ echo "HI THERE!" | tee >(pyfi.processors.sample.do_something) >(pyfi.processors.sample.do_this) >/dev/null; } | cat

title "The same with plain ec run"
echo "HI THERE!" | ec run "$DO_SOMETHING" | echo "$(cat -) add some text" | ec run "$DO_THIS"
{ echo "HI THERE!" | tee >(ec run "$DO_SOMETHING") >(ec run "$DO_THIS") >/dev/null; } | cat
