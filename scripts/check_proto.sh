#!/usr/bin/env bash
# Fails when the checked-in generated code differs from what scripts/gen_proto.sh makes now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
bash scripts/gen_proto.sh "$tmp"
for f in parawatt_pb2.py parawatt_pb2.pyi parawatt_pb2_grpc.py; do
  if ! diff -q "$tmp/parawatt_proto/$f" "parawatt_proto/$f" >/dev/null; then
    echo "parawatt_proto/$f is stale: run scripts/gen_proto.sh and commit the result" >&2
    diff -u "parawatt_proto/$f" "$tmp/parawatt_proto/$f" | head -20 >&2 || true
    exit 1
  fi
done
echo "generated protobuf code is up to date"
