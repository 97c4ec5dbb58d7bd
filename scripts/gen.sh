#!/usr/bin/env bash
# Regenerates gen/ from proto/ (the contracts) deterministically:
#   gen/python/         messages (*_pb2.py), gRPC stubs (*_pb2_grpc.py) and type stubs (*.pyi, mypy-protobuf)
#                       for every file under proto/, plus __init__.py files so that `library.v1` and
#                       `download.v1` import as packages with gen/python on sys.path; messages of the
#                       vendored third_party/buf/validate/validate.proto too (no runtime package ships a
#                       google.protobuf build of it). Nothing is generated for third_party/google (api, rpc):
#                       the runtime uses googleapis-common-protos.
#   gen/descriptor.binpb FileDescriptorSet of the whole buf workspace with imports and source info (what
#                       Envoy's gRPC-JSON transcoder loads; includes google/api/*, google/rpc/status.proto
#                       and google/rpc/error_details.proto).
#   gen/openapi.json    OpenAPI 3 document of the REST edge (scripts/openapi.py, from the descriptor set);
#                       Envoy serves it at /api/v1/docs.
#
# Usage: scripts/gen.sh            regenerate gen/ in place (stale files are removed)
#        scripts/gen.sh --check    regenerate into a temporary directory and fail if gen/ differs
# Works from any directory; uses the virtualenv at $ROOT_DIR/.venv (`make venv`).
set -euo pipefail

# shellcheck source=lib/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h | --help)
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "gen.sh: unknown argument '$1' (usage: scripts/gen.sh [--check])" >&2
    exit 2
    ;;
esac

venv="$ROOT_DIR/.venv"
py="$venv/bin/python"
buf="$venv/bin/buf"
for tool in "$py" "$buf" "$venv/bin/protoc-gen-mypy" "$venv/bin/protoc-gen-mypy_grpc"; do
  if [[ ! -x "$tool" ]]; then
    echo "gen.sh: $tool not found; run 'make venv' first" >&2
    exit 1
  fi
done

# Deterministic environment: byte order collation for file lists, no bytecode written while smoke-testing.
export LC_ALL=C
export PYTHONDONTWRITEBYTECODE=1
umask 022

cd "$ROOT_DIR"

work="$(mktemp -d "${TMPDIR:-/tmp}/gen.XXXXXXXX")"
trap 'rm -rf "$work"' EXIT
out="$work/gen"
mkdir -p "$out/python"

# Every contract file, relative to proto/ (the import root), in a stable order.
mapfile -t protos < <(cd proto && find . -name '*.proto' -type f | sed 's|^\./||' | sort)
if ((${#protos[@]} == 0)); then
  echo "gen.sh: no .proto files under proto/" >&2
  exit 1
fi

# 1. Python: messages, gRPC stubs, and mypy-protobuf type stubs for messages and services.
#    grpc_tools.protoc adds its bundled google/protobuf/*.proto to the include path itself.
#    mypy-protobuf reports each file it writes on stderr; keep only real diagnostics.
if ! "$py" -m grpc_tools.protoc \
  --proto_path=proto \
  --proto_path=third_party \
  --plugin=protoc-gen-mypy="$venv/bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$venv/bin/protoc-gen-mypy_grpc" \
  --python_out="$out/python" \
  --grpc_python_out="$out/python" \
  --mypy_out="$out/python" \
  --mypy_grpc_out="$out/python" \
  "${protos[@]}" 2> >(grep -v '^Writing mypy to ' >&2); then
  echo "gen.sh: protoc failed" >&2
  exit 1
fi
if ! "$py" -m grpc_tools.protoc \
  --proto_path=third_party \
  --plugin=protoc-gen-mypy="$venv/bin/protoc-gen-mypy" \
  --python_out="$out/python" \
  --mypy_out="$out/python" \
  buf/validate/validate.proto 2> >(grep -v '^Writing mypy to ' >&2); then
  echo "gen.sh: protoc failed on buf/validate/validate.proto" >&2
  exit 1
fi

# Packages: an empty __init__.py in every generated directory below gen/python (library/, library/v1/, ...).
while IFS= read -r dir; do
  : >"$dir/__init__.py"
done < <(find "$out/python" -mindepth 1 -type d | sort)

# 2. Descriptor set for Envoy: both buf modules (proto/ and third_party/) plus the well-known types they
#    import, with source info (comments feed the generated OpenAPI document).
"$buf" build --as-file-descriptor-set -o "$out/descriptor.binpb"

# 3. OpenAPI 3 document of the REST edge, from the descriptor set's google.api.http annotations and comments.
"$py" -I -B scripts/openapi.py "$out/descriptor.binpb" "$out/openapi.json"

# Smoke test: every generated module imports against the installed runtime.
(
  cd "$out/python"
  mods=()
  while IFS= read -r f; do
    f="${f#./}"
    f="${f%.py}"
    mods+=("${f//\//.}")
  done < <(find . -name '*_pb2*.py' -type f | sort)
  "$py" -I -B -c 'import importlib, sys
sys.path.insert(0, ".")
for m in sys.argv[1:]:
    importlib.import_module(m)' "${mods[@]}"
) || {
  echo "gen.sh: generated Python code does not import" >&2
  exit 1
}

# The descriptor set must carry what Envoy needs to transcode and to render error details.
"$py" -I -B - "$out/descriptor.binpb" <<'EOF'
import sys

from google.protobuf import descriptor_pb2

fds = descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], "rb").read())
names = {f.name for f in fds.file}
need = {
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/field_behavior.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
}
missing = sorted(need - names)
if missing:
    sys.exit(f"gen.sh: descriptor set lacks {', '.join(missing)}")
if not any(f.HasField("source_code_info") for f in fds.file):
    sys.exit("gen.sh: descriptor set lacks source info")
EOF

if ((check)); then
  if diff -rq -x __pycache__ -x '*.pyc' gen "$out" >"$work/diff.txt" 2>&1; then
    echo "gen/ is up to date."
    exit 0
  fi
  {
    echo "gen.sh --check: gen/ is stale: it differs from what proto/ generates."
    echo "Run 'make gen' (scripts/gen.sh) and commit the result. Differences:"
    sed "s|$out|<fresh>|g" "$work/diff.txt" | head -50
  } >&2
  exit 1
fi

# Replace the generated trees wholesale so files of deleted protos disappear too.
mkdir -p gen
rm -rf gen/python gen/descriptor.binpb gen/openapi.json
mv "$out/python" gen/python
mv "$out/descriptor.binpb" gen/descriptor.binpb
mv "$out/openapi.json" gen/openapi.json
echo "gen/ regenerated from ${#protos[@]} proto files."
