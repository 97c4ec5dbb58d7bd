"""Generates the OpenAPI 3.0.3 document of the REST edge from the descriptor set (SPEC §5).

Every RPC of library.v1 / download.v1 with a `google.api.http` annotation becomes one operation, shaped as
Envoy's gRPC-JSON transcoder serves it: path parameters from the template, the request body from `body`,
the other request fields as query parameters (lowerCamelCase JSON names), proto3 JSON schemas for every
message reached, comments as descriptions, and the `google.rpc.Status` error body of SPEC §4.

Usage: scripts/openapi.py [DESCRIPTOR_SET [OUTPUT]]   (defaults gen/descriptor.binpb, gen/openapi.json)
Run by scripts/gen.sh; the output is deterministic (sorted keys, stable order) so `gen.sh --check` holds.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

from buf.validate import validate_pb2

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("library.v1", "download.v1")
FD = descriptor_pb2.FieldDescriptorProto
REQUIRED, OUTPUT_ONLY = field_behavior_pb2.REQUIRED, field_behavior_pb2.OUTPUT_ONLY

# proto3 JSON writes 64-bit integers as decimal strings: the pattern says so, so that a generated client (or
# a fuzzer) sends digits, not any string.
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_NON_NEGATIVE_DIGITS = "^[0-9]+$"
_POSITIVE_DIGITS = "^[0-9]*[1-9][0-9]*$"
SCALARS = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT64: _INT64,
    FD.TYPE_SINT64: _INT64,
    FD.TYPE_SFIXED64: _INT64,
    FD.TYPE_UINT64: _UINT64,
    FD.TYPE_FIXED64: _UINT64,
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WRAPPERS = {"Double": FD.TYPE_DOUBLE, "Float": FD.TYPE_FLOAT, "Int64": FD.TYPE_INT64}
_WRAPPERS |= {"UInt64": FD.TYPE_UINT64, "Int32": FD.TYPE_INT32, "UInt32": FD.TYPE_UINT32}
_WRAPPERS |= {"Bool": FD.TYPE_BOOL, "String": FD.TYPE_STRING, "Bytes": FD.TYPE_BYTES}
# Well-known types have their own proto3 JSON forms; they are inlined, never components.
WELL_KNOWN = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    ".google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated lowerCamelCase paths."},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
} | {f".google.protobuf.{k}Value": {**SCALARS[t], "nullable": True} for k, t in _WRAPPERS.items()}

STATUS = {
    "type": "object",
    "description": "`google.rpc.Status` as Envoy renders a gRPC error: the canonical code, a message and "
    "exactly one `google.rpc.ErrorInfo` (reason, domain `library.platform`), plus a "
    "`google.rpc.BadRequest` with field violations for invalid fields.",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "gRPC canonical status code."},
        "message": {"type": "string", "description": "Developer-facing error message."},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string", "description": "Type URL of the detail."}},
                "required": ["@type"],
                "additionalProperties": True,
            },
        },
    },
}
# HTTP status → (component name, description) per SPEC §4; "default" covers 500 INTERNAL and the rest.
ERRORS = {
    "400": ("BadRequest", "INVALID_ARGUMENT (VALIDATION_FAILED) or FAILED_PRECONDITION."),
    "401": ("Unauthenticated", "UNAUTHENTICATED: missing, expired or invalid bearer token."),
    "403": ("PermissionDenied", "PERMISSION_DENIED (PERMISSION_DENIED, PRODUCT_ACCESS_DENIED)."),
    "404": ("NotFound", "NOT_FOUND: the resource does not exist or is not the caller's."),
    "409": ("Conflict", "ALREADY_EXISTS, or ABORTED (ETAG_MISMATCH, SAVEGAME_CONFLICT_RESOLUTION_REQUIRED)."),
    "429": ("ResourceExhausted", "RESOURCE_EXHAUSTED (RATE_LIMITED, MAX_SAVEGAME_QUOTA_EXCEEDED)."),
    "501": ("Unimplemented", "UNIMPLEMENTED."),
    "503": ("Unavailable", "UNAVAILABLE: a dependency is down; retry later."),
    "default": ("Error", "Any other error (500 INTERNAL carries a generic message)."),
}


# Rules across fields that buf.validate's standard rules cannot state; the server checks them in the
# servicer (named beside each). A schema states them as alternatives, so that a generated client, or a fuzzer
# that fills every optional property, still makes only requests the server accepts.
CROSS_FIELD_SCHEMAS = {
    # server/cloud_saves/servicer.py: new_slot_name is required with KEEP_BOTH and must be empty otherwise.
    "library.v1.ResolveSaveGameConflictRequest": {
        "oneOf": [
            {"properties": {"resolution": {"enum": ["KEEP_BOTH"]}}, "required": ["newSlotName"]},
            {
                "properties": {
                    "resolution": {"enum": ["KEEP_CLOUD", "KEEP_LOCAL"]},
                    "newSlotName": {"maxLength": 0},
                }
            },
        ]
    },
}


def _doc(text: str) -> str:
    lines = [line.removeprefix(" ").rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip()


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name.lstrip('.')}"}


def _behaviors(field: descriptor_pb2.FieldDescriptorProto) -> list[int]:
    return list(field.options.Extensions[field_behavior_pb2.field_behavior])


def _rules(field: descriptor_pb2.FieldDescriptorProto):
    """The field's buf.validate rules, or None."""
    if field.options.HasExtension(validate_pb2.field):
        return field.options.Extensions[validate_pb2.field]
    return None


def _is_required(field) -> bool:
    rules = _rules(field)
    return REQUIRED in _behaviors(field) or (rules is not None and rules.required)


_NUMBER_KINDS = ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32")
_NUMBER_KINDS += ("sfixed64", "float", "double")


def _value_constraints(schema: dict, rules, required: bool) -> dict:
    """`schema` (one value's) with the JSON Schema form of its buf.validate rules (SPEC §3)."""
    if rules is None:
        return schema
    kind = rules.WhichOneof("type")
    schema = dict(schema)
    if kind == "string":
        r = rules.string
        if r.uuid:
            schema["format"] = "uuid"
        if r.HasField("min_len"):
            schema["minLength"] = r.min_len
        if r.HasField("max_len"):
            schema["maxLength"] = r.max_len
        if r.HasField("len"):
            schema["minLength"] = schema["maxLength"] = r.len
        if r.HasField("pattern"):
            schema["pattern"] = r.pattern
        if getattr(r, "in"):
            schema["enum"] = list(getattr(r, "in"))
        if r.example:
            schema["example"] = r.example[0]
        if required:
            schema["minLength"] = max(schema.get("minLength", 0), 1)
    elif kind in _NUMBER_KINDS and schema.get("type") in ("integer", "number"):
        r = getattr(rules, kind)
        for name, key, exclusive in (("gt", "minimum", True), ("gte", "minimum", False)):
            if r.HasField(name):
                schema[key] = getattr(r, name)
                if exclusive:
                    schema["exclusiveMinimum"] = True
        for name, key, exclusive in (("lt", "maximum", True), ("lte", "maximum", False)):
            if r.HasField(name):
                schema[key] = getattr(r, name)
                if exclusive:
                    schema["exclusiveMaximum"] = True
        if r.example:
            schema["example"] = r.example[0]
    elif kind in _NUMBER_KINDS and schema.get("format") in ("int64", "uint64"):
        schema["pattern"] = _int64_pattern(getattr(rules, kind), schema["pattern"])
    elif kind == "enum" and "enum" in schema and required:
        schema["enum"] = schema["enum"][1:]  # `required`: not the zero (UNSPECIFIED) value
    return schema


def _int64_pattern(r, default: str) -> str:
    """The digits a 64-bit integer's lower bound allows (upper bounds are in the field's description)."""
    if (r.HasField("gt") and r.gt >= 0) or (r.HasField("gte") and r.gte >= 1):
        return _POSITIVE_DIGITS
    if r.HasField("gte") and r.gte >= 0:
        return _NON_NEGATIVE_DIGITS
    return default


class Generator:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.docs: dict[str, str] = {}  # full name (".pkg.Msg.field", ".pkg.Svc.Rpc", ...) → comment
        self.services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = []
        self.schemas: dict[str, dict] = {"Status": STATUS}
        self.pending: list[str] = []
        self.in_responses: set[str] = set()  # messages some response carries: documented as served
        for file in fds.file:
            comments = {tuple(loc.path): _doc(loc.leading_comments) for loc in file.source_code_info.location}
            scope = f".{file.package}"
            for i, message in enumerate(file.message_type):
                self._index_message(message, scope, (4, i), comments)
            for i, enum in enumerate(file.enum_type):
                self._index_enum(enum, scope, (5, i), comments)
            for i, service in enumerate(file.service):
                name = f"{scope}.{service.name}"
                self.docs[name] = comments.get((6, i), "")
                for j, method in enumerate(service.method):
                    self.docs[f"{name}.{method.name}"] = comments.get((6, i, 2, j), "")
                if file.package in PACKAGES:
                    self.services.append((name, service))

    def _index_message(self, message, scope: str, path: tuple, comments: dict) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name], self.docs[name] = message, comments.get(path, "")
        for i, field in enumerate(message.field):
            self.docs[f"{name}.{field.name}"] = comments.get((*path, 2, i), "")
        for i, nested in enumerate(message.nested_type):
            self._index_message(nested, name, (*path, 3, i), comments)
        for i, enum in enumerate(message.enum_type):
            self._index_enum(enum, name, (*path, 4, i), comments)

    def _index_enum(self, enum, scope: str, path: tuple, comments: dict) -> None:
        name = f"{scope}.{enum.name}"
        self.enums[name], self.docs[name] = enum, comments.get(path, "")
        for i, value in enumerate(enum.value):
            self.docs[f"{name}.{value.name}"] = comments.get((*path, 2, i), "")

    # ------------------------------------------------------------------ schemas

    def _mark_responses(self, name: str) -> None:
        if name in self.in_responses or name not in self.messages:
            return
        self.in_responses.add(name)
        for field in self.messages[name].field:
            if field.type == FD.TYPE_MESSAGE:
                self._mark_responses(field.type_name)

    def constrained_schema(self, field) -> dict:
        """`type_schema` plus the field's buf.validate rules: for request fields only (a message some
        response carries is documented as the server fills it)."""
        schema, rules = self.type_schema(field), _rules(field)
        if rules is None:
            return schema
        required = rules.required
        if field.label == FD.LABEL_REPEATED and schema.get("type") == "array":
            items = rules.repeated.items if rules.WhichOneof("type") == "repeated" else None
            schema = {**schema, "items": _value_constraints(schema["items"], items, False)}
            if rules.WhichOneof("type") == "repeated":
                r = rules.repeated
                if r.HasField("min_items"):
                    schema["minItems"] = r.min_items
                if r.HasField("max_items"):
                    schema["maxItems"] = r.max_items
                if r.unique:
                    schema["uniqueItems"] = True
            if required:
                schema["minItems"] = max(schema.get("minItems", 0), 1)
            return schema
        if "$ref" in schema or schema.get("type") == "object":
            return schema
        return _value_constraints(schema, rules, required)

    def type_schema(self, field) -> dict:
        """proto3 JSON schema of a field's value (repeated and map included), without its description."""
        entry = self.messages.get(field.type_name)
        if entry is not None and entry.options.map_entry:
            return {"type": "object", "additionalProperties": self.type_schema(entry.field[1])}
        if field.type == FD.TYPE_ENUM:
            schema = {"type": "string", "enum": [v.name for v in self.enums[field.type_name].value]}
        elif field.type == FD.TYPE_MESSAGE:
            if field.type_name in WELL_KNOWN:
                schema = dict(WELL_KNOWN[field.type_name])
            else:
                self.pending.append(field.type_name)
                schema = _ref(field.type_name)
        else:
            schema = dict(SCALARS[field.type])
        return {"type": "array", "items": schema} if field.label == FD.LABEL_REPEATED else schema

    def field_doc(self, owner: str, field) -> str:
        doc = self.docs.get(f"{owner}.{field.name}", "")
        enum = self.enums.get(field.type_name) if field.type == FD.TYPE_ENUM else None
        if enum is not None:
            values = [f"- `{v.name}`: {self.docs[f'{field.type_name}.{v.name}']}" for v in enum.value]
            doc = "\n\n".join(filter(None, [doc, "\n".join(values)]))
        return doc

    def field_schema(self, owner: str, field) -> dict:
        schema = self.type_schema(field) if owner in self.in_responses else self.constrained_schema(field)
        doc = self.field_doc(owner, field)
        extra: dict = {"description": doc} if doc else {}
        if OUTPUT_ONLY in _behaviors(field):
            extra["readOnly"] = True
        if extra and "$ref" in schema:
            schema = {"allOf": [schema]}
        return {**schema, **extra}

    def message_schema(self, name: str, exclude: frozenset[str] = frozenset()) -> dict:
        schema: dict = {"type": "object"}
        fields = [f for f in self.messages[name].field if f.name not in exclude]
        if fields:
            schema["properties"] = {f.json_name: self.field_schema(name, f) for f in fields}
        required = [f.json_name for f in fields if _is_required(f)]
        if required:
            schema["required"] = required
        if self.docs.get(name):
            schema["description"] = self.docs[name]
        return schema | CROSS_FIELD_SCHEMAS.get(name.lstrip("."), {})

    # ------------------------------------------------------------------ operations

    def resolve(self, message: str, path: str):
        """(owner message, field) of a dotted field path."""
        owner, field = message, None
        for part in path.split("."):
            if field is not None:
                owner = field.type_name
            field = next(f for f in self.messages[owner].field if f.name == part)
        return owner, field

    def query_parameters(self, message: str, skip: set[str], prefix: str = "", seen=()) -> list[dict]:
        params = []
        for field in self.messages[message].field:
            if field.name in skip:
                continue
            if field.type == FD.TYPE_MESSAGE and field.type_name not in WELL_KNOWN:
                entry = self.messages[field.type_name]
                if not entry.options.map_entry and field.label != FD.LABEL_REPEATED and message not in seen:
                    name = f"{prefix}{field.json_name}."
                    params += self.query_parameters(field.type_name, set(), name, (*seen, message))
                continue
            schema = self.constrained_schema(field)
            if schema.get("type") in ("object", None) or schema.get("items", {}).get("type") == "object":
                continue  # Struct, Value, Any, Empty: not expressible in a query string
            param = {"name": prefix + field.json_name, "in": "query", "schema": schema}
            if self.field_doc(message, field):
                param["description"] = self.field_doc(message, field)
            if _is_required(field):
                param["required"] = True
            params.append(param)
        return params

    def operation(self, service: str, method, rule, operation_id: str) -> tuple[str, str, dict]:
        kind = rule.WhichOneof("pattern")
        verb, template = (
            (rule.custom.kind, rule.custom.path) if kind == "custom" else (kind, getattr(rule, kind))
        )
        fields = [m.group(1) for m in re.finditer(r"\{([^}=]+)(?:=[^}]*)?\}", template)]
        path = re.sub(r"\{([^}=]+)(?:=[^}]*)?\}", r"{\1}", template)
        request, doc = method.input_type, self.docs.get(f"{service}.{method.name}", "")
        op: dict = {
            "operationId": operation_id,
            "tags": [service.rsplit(".", 1)[1]],
            "security": [{"bearerAuth": []}],
            "parameters": [],
        }
        if doc:
            op["summary"], op["description"] = doc.split("\n\n", 1)[0].replace("\n", " "), doc
        for name in fields:
            owner, field = self.resolve(request, name)
            param = {"name": name, "in": "path", "required": True, "schema": self.constrained_schema(field)}
            if self.field_doc(owner, field):
                param["description"] = self.field_doc(owner, field)
            op["parameters"].append(param)
        top = {name for name in fields if "." not in name}
        if rule.body == "*":
            schema = self.message_schema(request, frozenset(top))
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        else:
            if rule.body:
                owner, field = self.resolve(request, rule.body)
                body = {"required": REQUIRED in _behaviors(field)}
                if self.field_doc(owner, field):
                    body["description"] = self.field_doc(owner, field)
                body["content"] = {"application/json": {"schema": self.type_schema(field)}}
                op["requestBody"] = body
            op["parameters"] += self.query_parameters(request, top | {rule.body})
        if not op["parameters"]:
            del op["parameters"]
        if method.options.deprecated:
            op["deprecated"] = True
        if rule.response_body:
            owner, field = self.resolve(method.output_type, rule.response_body)
            schema = self.type_schema(field)
        elif method.output_type in WELL_KNOWN:
            schema = dict(WELL_KNOWN[method.output_type])
        else:
            self.pending.append(method.output_type)
            schema = _ref(method.output_type)
        ok = "OK." if method.output_type in WELL_KNOWN else self.docs.get(method.output_type) or "OK."
        op["responses"] = {"200": {"description": ok, "content": {"application/json": {"schema": schema}}}}
        for status, (name, _) in ERRORS.items():
            op["responses"][status] = {"$ref": f"#/components/responses/{name}"}
        return path, verb.lower(), op

    def document(self) -> dict:
        paths: dict[str, dict] = {}
        for _, descriptor in self.services:
            for method in descriptor.method:
                self._mark_responses(method.output_type)
        for service, descriptor in self.services:
            for method in descriptor.method:
                rule = method.options.Extensions[annotations_pb2.http]
                if not rule.WhichOneof("pattern"):
                    continue  # internal RPC: gRPC only
                base = f"{descriptor.name}_{method.name}"
                for i, binding in enumerate([rule, *rule.additional_bindings]):
                    path, verb, op = self.operation(service, method, binding, base + (f"_{i}" if i else ""))
                    if verb in paths.setdefault(path, {}):
                        raise SystemExit(f"openapi.py: two RPCs bind {verb.upper()} {path}")
                    paths[path][verb] = op
        while self.pending:
            name = self.pending.pop()
            if name.lstrip(".") not in self.schemas:
                self.schemas[name.lstrip(".")] = self.message_schema(name)
        responses = {
            name: {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
            }
            for name, text in ERRORS.values()
        }
        tags = [{"name": s.name, "description": self.docs[name]} for name, s in self.services]
        return {
            "openapi": "3.0.3",
            "info": {
                "title": "Game library & download REST API",
                "version": "v1",
                "description": "REST edge (Envoy gRPC-JSON transcoding) of the `library.v1` and "
                "`download.v1` gRPC services. Generated from proto/ by scripts/openapi.py; do not edit.",
            },
            "tags": sorted(tags, key=lambda tag: tag["name"]),
            "paths": paths,
            "components": {
                "schemas": self.schemas,
                "responses": responses,
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                },
            },
        }


def build(descriptor_set: bytes) -> dict:
    return Generator(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)).document()


def render(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else ROOT / "gen" / "descriptor.binpb"
    target = Path(argv[1]) if len(argv) > 1 else ROOT / "gen" / "openapi.json"
    target.write_text(render(build(source.read_bytes())), encoding="utf-8", newline="\n")


if __name__ == "__main__":
    main(sys.argv[1:])
