#!/usr/bin/env python3
"""Renders envoy/envoy.yaml.tmpl into an Envoy config (default: $ENVOY_CONFIG, i.e. .local/envoy/envoy.yaml).

Inputs (environment; every default comes from scripts/lib/env.sh):
  ENVOY_PORT, ENVOY_ADMIN_PORT          listener and admin ports (both on 127.0.0.1)
  GRPC_UPSTREAMS                        comma-separated host:port of the gRPC server processes
                                        (default $GRPC_HOST:$GRPC_PORT); one LEAST_REQUEST cluster
  GATEWAY_UPSTREAMS                     comma-separated IP:port of the WebSocket relay (default
                                        127.0.0.1:$WS_PORT)
  ENVOY_DESCRIPTOR                      descriptor set for the transcoder (default gen/descriptor.binpb);
                                        every service of the packages scripts/openapi.py documents
                                        (openapi.PACKAGES) is transcoded
  JWT_ISSUER, JWT_AUDIENCE               required claims (both must be set)
  JWT_JWKS_URL                          when set: remote_jwks (cached JWT_JWKS_CACHE_SECONDS, default 300),
                                        fetched through a cluster of its own; else JWT_JWKS_FILE (local)
  JWT_LEEWAY_SECONDS                    clock skew allowed on exp/nbf (the server's setting of that name)
  CORS_ALLOWED_ORIGINS                  comma-separated origins, or * (default: any origin, for development)
  ENVOY_MAX_REQUEST_BYTES               largest REST request body (default 1048576); larger ones get 413
  OTEL_EXPORTER_OTLP_ENDPOINT           OTLP/gRPC collector for Envoy's spans (none: traceparent only)
  OTEL_TRACES_SAMPLER_ARG               ratio of new traces sampled (default 0.1, as the server)
  OPENAPI_FILE                          served at /api/v1/docs when it exists (default gen/openapi.json)
  ENVOY_ACCESS_LOG                      1 (default) = JSON access log on stdout, 0 = none
  ENVOY_REST_TIMEOUT                    route timeout of REST calls (default 30s)

Usage: render-envoy.py [-o FILE|-] [--strict]
  --strict  fail when the descriptor lacks google/rpc/{status,error_details}.proto (default: warn) or the
            JWKS file does not exist (default: render anyway; scripts/stack-up.sh creates it)
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import sys
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.lib.envdefaults import env  # noqa: E402
from scripts.openapi import PACKAGES  # noqa: E402

TEMPLATE = ROOT / "envoy" / "envoy.yaml.tmpl"

# Needed so that convert_grpc_status can render google.rpc.Status details (SPEC section 4).
REQUIRED_FILES = ["google/rpc/status.proto", "google/rpc/error_details.proto"]

# Identity claims a client might try to smuggle in; the only identity is the verified bearer token.
STRIPPED_REQUEST_HEADERS = [
    "x-user-id",
    "x-user-roles",
    "x-user-role",
    "x-user",
    "x-roles",
    "x-subject",
    "x-principal",
    "x-jwt-payload",
    "x-jwt-claims",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-auth-user",
    "x-auth-request-user",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-remote-user",
    "x-service-role",
    "x-internal-caller",
]

ERROR_DOMAIN = "library.platform"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def die(message: str) -> None:
    print(f"render-envoy: {message}", file=sys.stderr)
    sys.exit(2)


def warn(message: str) -> None:
    print(f"render-envoy: WARNING: {message}", file=sys.stderr)


def sha256_of(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "absent"


def parse_upstreams(spec: str, what: str) -> tuple[list[dict], str]:
    endpoints = []
    all_ips = True
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            die(f"{what}: expected host:port, got {item!r}")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            all_ips = False
        endpoints.append(
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
        )
    if not endpoints:
        die(f"{what} is empty")
    return endpoints, "STATIC" if all_ips else "STRICT_DNS"


def descriptor_services(path: str) -> tuple[list[str], set[str]]:
    """(full names of the services to transcode, sorted; file names) of a FileDescriptorSet."""
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(Path(path).read_bytes())
    except Exception as exc:
        die(f"{path} is not a FileDescriptorSet: {exc}")
    services = sorted(
        f"{file.package}.{service.name}"
        for file in fds.file
        if file.package in PACKAGES
        for service in file.service
    )
    return services, {f.name for f in fds.file}


def status_filter(status: int) -> dict:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": status, "runtime_key": f"local_reply.{status}"},
            }
        }
    }


def content_type_filter(is_grpc: bool) -> dict:
    return {
        "header_filter": {
            "header": {
                "name": "content-type",
                "string_match": {"prefix": "application/grpc"},
                "invert_match": not is_grpc,
                "treat_missing_header_as_empty": True,
            }
        }
    }


# The transcoder rewrites a REST request into a gRPC one (content-type application/grpc) and keeps the
# original path in x-envoy-original-path: a local reply after that point (malformed JSON body, unknown
# query parameter) is still an answer to a REST client.
TRANSCODED = {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}}
REST_REQUEST = {"or_filter": {"filters": [content_type_filter(False), TRANSCODED]}}
GRPC_REQUEST = content_type_filter(True)  # only used after the REST mappers: not transcoded


# jwt_authn's own WWW-Authenticate names the request URL as the realm, a ?token= included: a fixed realm
# instead, so that no token is ever echoed back.
WWW_AUTHENTICATE = 'Bearer realm="library"'


def _set_header(name: str, value: str) -> dict:
    return {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


FIXED_REALM = [_set_header("www-authenticate", WWW_AUTHENTICATE)]

# gRPC transport headers a REST client has no use for (the transcoder leaves them on its responses).
GRPC_RESPONSE_HEADERS = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-accept-encoding",
    "grpc-encoding",
]


MALFORMED_REQUEST = (
    "the request does not match the operation's schema: the body is not valid JSON for it, or a path or query"
    " parameter has the wrong type or name (the document is at /api/v1/docs)"
)
UNAVAILABLE = "the service is unavailable; retry with backoff"


def status_json(code: int, message: str, reason: str) -> dict:
    """A google.rpc.Status JSON body with one ErrorInfo, the shape the transcoder gives upstream errors."""
    return {
        "code": code,
        "message": message,
        "details": [{"@type": ERROR_INFO, "reason": reason, "domain": ERROR_DOMAIN}],
    }


def rest_error_mapper(
    status: int, code: int, reason: str, message: str = "%LOCAL_REPLY_BODY%", new_status: int | None = None
) -> dict:
    """A REST reply of Envoy's own in the Status shape. `message` replaces Envoy's text where that text is
    a parser's or a proxy's internals (SPEC section 4); the token errors keep jwt_authn's short reason."""
    mapper = {
        "filter": {"and_filter": {"filters": [status_filter(status), REST_REQUEST]}},
        "body_format_override": {
            "json_format": status_json(code, message, reason),
            "content_type": "application/json",
        },
    }
    if new_status is not None:
        mapper["status_code"] = new_status
    if (new_status or status) == 401:
        mapper["headers_to_add"] = FIXED_REALM
    return mapper


def local_reply_mappers() -> list[dict]:
    """Envoy's own error replies, with the reasons the server uses (SPEC section 4)."""
    return [
        # jwt_authn: missing, malformed, expired, badly signed, wrong issuer -> 401
        rest_error_mapper(401, 16, "UNAUTHENTICATED"),
        # jwt_authn answers 403 for a valid token with a foreign audience: still a bad token for us.
        rest_error_mapper(403, 16, "UNAUTHENTICATED", new_status=401),
        {
            "filter": {"and_filter": {"filters": [status_filter(403), GRPC_REQUEST]}},
            "status_code": 401,
            "headers_to_add": FIXED_REALM,
        },
        {"filter": status_filter(401), "headers_to_add": FIXED_REALM},
        # transcoder: malformed JSON body, unknown query parameter, bad field value (its parser's text is
        # not passed on)
        rest_error_mapper(400, 3, "VALIDATION_FAILED", MALFORMED_REQUEST),
        # transcoder: no RPC bound to this method and path
        rest_error_mapper(404, 5, "ROUTE_NOT_FOUND", "no operation at this path; see /api/v1/docs"),
        # transcoder: body above ENVOY_MAX_REQUEST_BYTES
        rest_error_mapper(413, 3, "VALIDATION_FAILED", "the request body is too large"),
        rest_error_mapper(429, 8, "RATE_LIMITED", "too many requests; retry after the Retry-After delay"),
        # no upstream reachable / upstream reset
        rest_error_mapper(502, 14, "UNAVAILABLE", UNAVAILABLE),
        rest_error_mapper(503, 14, "UNAVAILABLE", UNAVAILABLE),
        rest_error_mapper(504, 4, "DEADLINE_EXCEEDED", "the service did not answer in time; retry"),
    ]


def _path_regex(template: str) -> str:
    """The RE2 regex of a REST path template of the OpenAPI document (`{var}` = one segment)."""
    parts = re.split(r"(\{[^}]+\})", template)
    return "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)


def _overlap(a: str, b: str) -> bool:
    """Whether some path matches both templates (segment by segment: equal, or a variable in either)."""
    sa, sb = a.strip("/").split("/"), b.strip("/").split("/")
    return len(sa) == len(sb) and all(
        x == y or x.startswith("{") or y.startswith("{") for x, y in zip(sa, sb, strict=True)
    )


def method_not_allowed_routes(openapi_file: str) -> list[dict]:
    """A 405 route with `Allow` per REST path of the OpenAPI document, for the methods no RPC binds there.

    Allow lists the methods of every path template that can match the same paths (`/savegames/{id}` and
    `/savegames/confirm-upload`), so a request some RPC accepts never lands here; the transcoder is off on
    these routes (it would answer 404)."""
    path = Path(openapi_file)
    if not openapi_file or not path.is_file():
        return []
    paths = json.loads(path.read_text()).get("paths", {})
    routes = []
    for template in sorted(paths, key=lambda t: (t.count("{"), t)):
        allowed = sorted(
            {verb.upper() for other, ops in paths.items() if _overlap(template, other) for verb in ops}
        )
        allow = ", ".join(allowed)
        body = status_json(12, f"this path takes {allow}", "METHOD_NOT_ALLOWED")
        routes.append(
            {
                "match": {
                    "safe_regex": {"regex": _path_regex(template)},
                    "headers": [
                        {
                            "name": ":method",
                            # OPTIONS stays with the CORS filter (preflights), which a direct
                            # response route would bypass.
                            "string_match": {"safe_regex": {"regex": "|".join([*allowed, "OPTIONS"])}},
                            "invert_match": True,
                        }
                    ],
                },
                "direct_response": {"status": 405, "body": {"inline_string": json.dumps(body)}},
                "response_headers_to_add": [
                    _set_header("allow", allow),
                    _set_header("content-type", "application/json"),
                ],
                "typed_per_filter_config": TRANSCODER_OFF,
            }
        )
    return routes


def cors_origins(spec: str) -> list[dict]:
    """CORS_ALLOWED_ORIGINS (comma-separated, or `*`) as Envoy string matchers."""
    origins = [o.strip() for o in spec.split(",") if o.strip()]
    if not origins or "*" in origins:
        return [{"safe_regex": {"regex": ".*"}}]
    return [{"exact": origin} for origin in origins]


def url_cluster(name: str, parts, *, http2: bool) -> dict:
    """A cluster of the one host of a URL (TLS for https; HTTP/2 for gRPC services)."""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    try:
        ipaddress.ip_address(parts.hostname)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"
    address = {"socket_address": {"address": parts.hostname, "port_value": port}}
    cluster = {
        "name": name,
        "type": kind,
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": parts.hostname,
            },
        }
    return cluster


# Without a collector, Envoy's OpenTelemetry tracer (which must have an exporter) sends its spans to an
# internal listener that drops them: the trace context is still started or continued and sent upstream.
SPAN_SINK_CLUSTER = {
    "name": "otel_collector",
    "connect_timeout": "1s",
    "load_assignment": {
        "cluster_name": "otel_collector",
        "endpoints": [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {"envoy_internal_address": {"server_listener_name": "span_sink"}}
                        }
                    }
                ]
            }
        ],
    },
}


def tracing(endpoint: str, ratio: str) -> tuple[dict, list[dict]]:
    """(HCM tracing, extra clusters): Envoy starts or continues the W3C trace (traceparent) of every request
    and passes it upstream; spans go to OTEL_EXPORTER_OTLP_ENDPOINT over OTLP/gRPC, else to the span sink.
    New traces are sampled at the server's ratio (OTEL_TRACES_SAMPLER_ARG)."""
    try:
        percent = min(100.0, max(0.0, float(ratio) * 100))
    except ValueError:
        die(f"OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1, got {ratio!r}")
    config: dict = {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "service_name": "library-edge",
    }
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if not parts.hostname:
            die(f"OTEL_EXPORTER_OTLP_ENDPOINT must be a host:port or URL, got {endpoint!r}")
        config["grpc_service"] = {"envoy_grpc": {"cluster_name": "otel_collector"}, "timeout": "1s"}
        cluster = url_cluster("otel_collector", parts, http2=True)
    else:
        uri = {"uri": "http://span-sink/v1/traces", "cluster": "otel_collector", "timeout": "1s"}
        config["http_service"] = {"http_uri": uri}
        cluster = SPAN_SINK_CLUSTER
    provider = {"name": "envoy.tracers.opentelemetry", "typed_config": config}
    return {"random_sampling": {"value": percent}, "provider": provider}, [cluster]


def jwks_source(url: str, jwks_file: str, cache_seconds: str) -> tuple[str, dict, list[dict]]:
    """(provider field, its value, extra clusters): remote_jwks through a cluster of its own for a URL,
    else local_jwks from the file."""
    if not url:
        return "local_jwks", {"filename": jwks_file}, []
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        die(f"JWT_JWKS_URL must be an http(s) URL, got {url!r}")
    cluster = url_cluster("jwks", parts, http2=False)
    remote = {
        "http_uri": {"uri": url, "cluster": "jwks", "timeout": "5s"},
        "cache_duration": f"{int(cache_seconds)}s",
        # Fetched at start and on each cache expiry, in the background (requests do not wait on it).
        "async_fetch": {},
        "retry_policy": {},
    }
    return "remote_jwks", remote, [cluster]


def access_log() -> list[dict]:
    if env("ENVOY_ACCESS_LOG").lower() in ("0", "false", "no", "off"):
        return []
    # No Authorization header and no query string (a WebSocket ?token= must not reach the log).
    fields = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
        "path": "%PATH(NQ:ORIG_OR_PATH)%",
        "protocol": "%PROTOCOL%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS_NUMBER%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "user_id": "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:sub)%",
        "duration_ms": "%DURATION%",
        "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "upstream": "%UPSTREAM_HOST%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "user_agent": "%REQ(USER-AGENT)%",
    }
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"json_format": fields},
            },
        }
    ]


TRANSCODER_OFF = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}


def docs_route(openapi_file: str) -> tuple[dict, int]:
    disabled = TRANSCODER_OFF
    path = Path(openapi_file)
    if openapi_file and path.is_file():
        content_type = "application/yaml" if path.suffix in (".yaml", ".yml") else "application/json"
        size = path.stat().st_size
        return {
            "match": {"path": "/api/v1/docs"},
            "direct_response": {"status": 200, "body": {"filename": str(path)}},
            "response_headers_to_add": [_set_header("content-type", content_type)],
            "typed_per_filter_config": disabled,
        }, max(4096, size + 1)
    return {
        "match": {"path": "/api/v1/docs"},
        "direct_response": {
            "status": 404,
            "body": {"inline_string": "the OpenAPI document has not been generated (make gen)"},
        },
        "typed_per_filter_config": disabled,
    }, 4096


def render(strict: bool) -> str:
    descriptor = env("ENVOY_DESCRIPTOR")
    if not Path(descriptor).is_file():
        die(f"descriptor set {descriptor} not found (run `make gen`, or set ENVOY_DESCRIPTOR)")
    services, files = descriptor_services(descriptor)
    if not services:
        die(f"{descriptor} has no service in the packages {', '.join(PACKAGES)}")
    lacking = [f for f in REQUIRED_FILES if f not in files]
    if lacking:
        message = f"{descriptor} lacks {', '.join(lacking)}: error details cannot be rendered"
        if strict:
            die(message)
        warn(message)

    for name in ("JWT_ISSUER", "JWT_AUDIENCE"):
        if not env(name):
            die(f"{name} is not set (every token is checked against it)")
    jwks = env("JWT_JWKS_FILE")
    if not jwks and not env("JWT_JWKS_URL"):
        die("neither JWT_JWKS_FILE nor JWT_JWKS_URL is set")
    if strict and not env("JWT_JWKS_URL") and not Path(jwks).is_file():
        die(f"JWKS file {jwks} not found (scripts/stack-up.sh creates it)")
    jwks_field, jwks_value, jwks_clusters = jwks_source(
        env("JWT_JWKS_URL"), jwks, env("JWT_JWKS_CACHE_SECONDS") or "300"
    )
    trace_config, trace_clusters = tracing(
        env("OTEL_EXPORTER_OTLP_ENDPOINT"), env("OTEL_TRACES_SAMPLER_ARG") or "0.1"
    )
    for name in ("JWT_LEEWAY_SECONDS", "ENVOY_MAX_REQUEST_BYTES"):
        if not env(name).isdigit():
            die(f"{name} must be a whole number, got {env(name)!r}")

    grpc_upstreams = env("GRPC_UPSTREAMS")
    grpc_endpoints, grpc_type = parse_upstreams(grpc_upstreams, "GRPC_UPSTREAMS")
    gateway_upstreams = env("GATEWAY_UPSTREAMS")
    gateway_endpoints, gateway_type = parse_upstreams(gateway_upstreams, "GATEWAY_UPSTREAMS")
    if gateway_type != "STATIC":
        die("GATEWAY_UPSTREAMS must be IP:port pairs")
    openapi_file = env("OPENAPI_FILE")
    route, max_body = docs_route(openapi_file)

    for name in ("ENVOY_PORT", "ENVOY_ADMIN_PORT"):
        if not env(name).isdigit():
            die(f"{name} must be a port number, got {env(name)!r}")

    inputs = {
        "upstreams": grpc_upstreams,
        "gateway": gateway_upstreams,
        "descriptor": sha256_of(descriptor),
        "jwks": sha256_of(jwks),
        "openapi": sha256_of(openapi_file),
    }
    q = json.dumps
    values = {
        "RENDER_INPUTS": " ".join(f"{k}={v}" for k, v in inputs.items()),
        "ENVOY_PORT": env("ENVOY_PORT"),
        "ENVOY_ADMIN_PORT": env("ENVOY_ADMIN_PORT"),
        "ACCESS_LOG": q(access_log()),
        "LOCAL_REPLY_MAPPERS": q(local_reply_mappers()),
        "MAX_DIRECT_RESPONSE_BYTES": str(max_body),
        "STRIPPED_REQUEST_HEADERS": q(STRIPPED_REQUEST_HEADERS),
        "DOCS_ROUTE": q(route),
        "REST_TIMEOUT": q(env("ENVOY_REST_TIMEOUT")),
        "JWT_ISSUER": q(env("JWT_ISSUER")),
        "JWT_AUDIENCE": q(env("JWT_AUDIENCE")),
        "JWKS_FIELD": jwks_field,
        "JWKS_SOURCE": q(jwks_value),
        "TRACING": q(trace_config),
        "EXTRA_CLUSTERS": "".join(f"\n  - {q(cluster)}" for cluster in jwks_clusters + trace_clusters),
        "JWT_LEEWAY_SECONDS": env("JWT_LEEWAY_SECONDS"),
        "CORS_ORIGINS": q(cors_origins(env("CORS_ALLOWED_ORIGINS"))),
        "METHOD_NOT_ALLOWED_ROUTES": "".join(
            f"\n              - {q(r)}" for r in method_not_allowed_routes(openapi_file)
        ),
        "REST_RESPONSE_MUTATIONS": q([{"remove": name} for name in GRPC_RESPONSE_HEADERS]),
        "MAX_REQUEST_BYTES": env("ENVOY_MAX_REQUEST_BYTES"),
        "DESCRIPTOR": q(descriptor),
        "SERVICES": q(services),
        "GRPC_CLUSTER_TYPE": grpc_type,
        "GRPC_ENDPOINTS": q(grpc_endpoints),
        "GATEWAY_ENDPOINTS": q(gateway_endpoints),
    }
    return Template(TEMPLATE.read_text()).substitute(values)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", help="output file ('-' = stdout; default $ENVOY_CONFIG)")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    text = render(args.strict)
    output = args.output or env("ENVOY_CONFIG")
    if output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
