#!/usr/bin/env bash
# check_bench_args.sh BENCH — bench_cuda's bad options are usage errors: status 2 and a message
# naming the option, before any GPU is touched (so this runs without one); every option it
# documents is accepted (status 0, or 77 without a GPU).
set -u
bench=$1
bad=0
for args in "--long" "--long -1" "--steps 0" "--tiny 2" "--frob 1"; do
    # shellcheck disable=SC2086
    out=$("$bench" $args 2>&1)
    st=$?
    if [ "$st" -eq 2 ] && grep -q -- "${args%% *}" <<<"$out"; then
        echo "ok   $args: $out"
    else
        echo "FAIL $args: status $st: $out"
        bad=1
    fi
done
args="--types q4_1 --prompt 64 --chunk 128 --steps 5 --layers 2 --long 8192 --tiny 0"
# shellcheck disable=SC2086
out=$("$bench" $args 2>&1)
st=$?
if [ "$st" -eq 0 ] || [ "$st" -eq 77 ]; then
    echo "ok   every option accepted ($args): status $st"
else
    echo "FAIL $args: status $st: $out"
    bad=1
fi
exit $bad
