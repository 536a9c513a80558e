#!/usr/bin/env bash
# The one way to (re)generate parawatt_proto/ from proto/. Usage: scripts/gen_proto.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
py=${PARAWATT_PYTHON:-.venv/bin/python}
mkdir -p "$out/parawatt_proto"
"$py" -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/parawatt_proto/parawatt.proto
