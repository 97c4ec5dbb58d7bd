#!/usr/bin/env bash
# `make run`: the WebSocket relay (gateway/) in the background and the gRPC service in the foreground (the
# stack is already up: `make run` depends on stack-up). Ctrl-C stops both.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
source "$ROOT_DIR/scripts/lib/stack.sh"
cd "$ROOT_DIR"

# The relay runs detached (its own session: Ctrl-C reaches only the service, which drains first); it is
# stopped with SIGTERM (connections closed with 1001) whenever this script exits.
stack_stop gateway 15 # left over from an earlier run that was killed
stack_start_bg gateway python -m gateway
trap 'stack_stop gateway 15' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stack_wait gateway "$LOG_DIR/gateway.log" port_open "$WS_PORT"

cat <<MSG
gRPC (direct)        $GRPC_HOST:$GRPC_PORT
Edge (Envoy)         http://127.0.0.1:$ENVOY_PORT   REST /api/v1/..., native gRPC, WebSocket
WebSocket relay      ws://127.0.0.1:$WS_PORT (direct; via Envoy: ws://127.0.0.1:$ENVOY_PORT/api/v1/ws/library?token=...)
                     log $LOG_DIR/gateway.log, metrics http://127.0.0.1:${WS_METRICS_PORT:-9465}/metrics
Metrics              http://$GRPC_HOST:$METRICS_PORT/metrics
Dev token            scripts/mint-token --user \$(python -c 'import uuid; print(uuid.uuid4())')
Ctrl-C stops the service and the relay; 'make stack-down' stops the stack.
MSG
python -m server
