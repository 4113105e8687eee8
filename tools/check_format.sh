#!/usr/bin/env bash
# Every C, C++ and CUDA source of the project as clang-format (.clang-format) writes it; lists the
# files that differ and exits 1 if any does. `clang-format -i FILE` mends one.
set -u
cd "$(dirname "$0")/.."
bad=0
for f in $(git ls-files --cached --others --exclude-standard '*.c' '*.h' '*.cu' '*.cuh' '*.cpp'); do
    [ -f "$f" ] || continue
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "not formatted: $f"
        bad=1
    fi
done
[ $bad = 0 ] && echo "check_format: every source formatted"
exit $bad
