#!/usr/bin/env bash
# A trace viewer next to `lantern serve`: Arize Phoenix, installed into its own environment
# (.venv-phoenix: it is large, so it stays out of the project's default requirements), serving
# its UI at http://127.0.0.1:6006 and receiving OTLP over gRPC on 127.0.0.1:4317 and over HTTP at
# http://127.0.0.1:6006/v1/traces.
#
#   tools/trace_ui.sh &                                  # the viewer
#   build/lantern serve --otlp-traces-endpoint http://127.0.0.1:4317   # lantern, exporting to it
#   open http://127.0.0.1:6006 (project "default"): one trace per request, with the frontend's,
#   the engine's and (with --collect-detailed-traces all) every worker's spans
#
# PHOENIX_PORT / PHOENIX_GRPC_PORT move the ports; PHOENIX_WORKING_DIR keeps its database
# (default: a fresh temporary directory per run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${LANTERN_PHOENIX_VENV:-$root/.venv-phoenix}"
if [ ! -x "$venv/bin/phoenix" ]; then
    echo "trace_ui: installing arize-phoenix into $venv (once; a few minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "arize-phoenix==20.26.1"
fi
export PHOENIX_HOST="${PHOENIX_HOST:-127.0.0.1}"
export PHOENIX_PORT="${PHOENIX_PORT:-6006}"
export PHOENIX_GRPC_PORT="${PHOENIX_GRPC_PORT:-4317}"
export PHOENIX_WORKING_DIR="${PHOENIX_WORKING_DIR:-$(mktemp -d -t lantern-phoenix.XXXXXX)}"
echo "trace_ui: UI http://$PHOENIX_HOST:$PHOENIX_PORT, OTLP gRPC $PHOENIX_HOST:$PHOENIX_GRPC_PORT," \
     "OTLP HTTP http://$PHOENIX_HOST:$PHOENIX_PORT/v1/traces" >&2
exec "$venv/bin/phoenix" serve
