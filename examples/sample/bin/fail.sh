#!/bin/sh
# A script socket that fails: exit status ${1:-3}, with a message on stderr.
echo "fail.sh: giving up on purpose" >&2
exit "${1:-3}"
