#!/bin/sh
# A script socket (ec add processor --runtime exec): the call's input arrives on stdin,
# stdout is the result, stderr is the call's log (ec logs ID).
echo "wordcount: counting words" >&2
wc -w | tr -d ' '
