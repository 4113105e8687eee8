#!/usr/bin/env bash
# check_module_symbols.sh MODULE LOADER... — every lt_/wk_/kn_ function that MODULE (the CUDA
# module, liblantern_cuda.so) leaves undefined is defined and exported by each LOADER (an
# executable that dlopens it); otherwise dlopen fails there with "undefined symbol", which only
# shows on a GPU machine. Needs nm, not a GPU. Add a new import to LT_CUDA_MODULE_IMPORTS
# (CMakeLists.txt) when this fails.
set -u
mod=$1
shift
need=$(nm -D --undefined-only "$mod" | awk '{print $2}' | grep -E '^(lt|wk|kn)_' | sort -u)
[ -n "$need" ] || { echo "check_module_symbols: $mod imports none of ours?"; exit 1; }
bad=0
for exe in "$@"; do
    have=$(nm -D --defined-only "$exe" | awk '{print $3}' | sort -u)
    missing=$(comm -23 <(echo "$need") <(echo "$have"))
    if [ -n "$missing" ]; then
        echo "FAIL $(basename "$exe") does not export: $(echo $missing)"
        bad=1
    else
        echo "ok   $(basename "$exe") exports all $(echo "$need" | wc -l) imports"
    fi
done
exit $bad
