#!/usr/bin/env bash
# `make run`: the service in the foreground (the stack is already up: `make run` depends on stack-up).
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$ROOT_DIR"
cat <<MSG
gRPC (direct)        $GRPC_HOST:$GRPC_PORT
Edge (Envoy)         http://127.0.0.1:$ENVOY_PORT   REST /api/v1/..., native gRPC, WebSocket
Metrics              http://$GRPC_HOST:$METRICS_PORT/metrics
Dev token            scripts/mint-token --user \$(python -c 'import uuid; print(uuid.uuid4())')
Ctrl-C stops the service; 'make stack-down' stops the stack.
MSG
exec python -m server
