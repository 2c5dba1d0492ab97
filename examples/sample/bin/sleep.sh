#!/bin/sh
# A script socket that sleeps ${1:-10} seconds (for timeout tests), then prints "slept".
sleep "${1:-10}"
echo slept
