"""The contract's field rules (`buf.validate` annotations in proto/), compiled once into plain checks.

At start, `ContractRules.check_for(descriptor)` walks a request message's descriptor (nested messages,
repeated items and map entries included), reads its `(buf.validate.field)` options and builds closures that
need no descriptor and no CEL per call: one attribute read and a few comparisons per field with rules.
A violation is a `FieldViolation` whose field is the protovalidate field path (`items[2].product_id`) and
whose rule is the protovalidate rule id (`string.uuid`, `int32.gte`); the call pipeline raises them as one
INVALID_ARGUMENT VALIDATION_FAILED. protovalidate itself is the oracle the agreement test compares these
checks with (tests/unit/test_contract_rules.py); it is not on the request path.

Supported: the standard rules listed in the working agreement (string, bytes, the number types, enum,
bool const, repeated, map, `required`, `ignore`). Any other annotation (CEL expressions, well-known string
formats other than `uuid`, timestamp rules, message/oneof rules) fails the compilation with
`UnsupportedRule`, so that no rule is silently left unenforced.

One rule is the server's own, not the contract's: no string anywhere in a request may hold a NUL
character (`string.no_nul`), because Postgres text cannot store it (SPEC §4).

Patterns are matched with Python's `re` (search semantics, like CEL's `matches`); protovalidate matches
with Rust's `regex`. Write patterns in their common subset: explicit character classes instead of
`\\s`, `\\w`, `\\d`, `\\b` (whose Unicode meaning differs between the two), which are refused here.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from buf.validate import validate_pb2
from server.core.errors import FieldViolation

NO_NUL = "string.no_nul"
_NUL_MESSAGE = "must not contain NUL characters"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}").fullmatch
_UUID_RULES = frozenset(("string.uuid", "string.uuid_empty"))

# A value test: (predicate that is true when the value passes, rule id, message).
ValueTest = tuple[Callable[[Any], bool], str, str]
# A compiled message check: appends the violations of `message` to `out`, paths prefixed by `prefix`.
MessageCheck = Callable[[Any, str, list[FieldViolation]], None]
RequestCheck = Callable[[Any], list[FieldViolation]]

_NUMBER_KINDS = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_DOUBLE: "double",
}
_SCALAR_KINDS = {
    **_NUMBER_KINDS,
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_BOOL: "bool",
}
_ZERO = {"string": "", "bytes": b"", "bool": False, "enum": 0}
# Rules that describe rather than constrain (used by the OpenAPI document only).
_DESCRIPTIVE = {"example"}


class UnsupportedRule(ValueError):
    """An annotation this compiler cannot enforce; raised at start rather than leaving the rule unenforced."""


def field_rules(field: FieldDescriptor) -> validate_pb2.FieldRules | None:
    """The field's `(buf.validate.field)` option, if it has one."""
    options = field.GetOptions()
    if options.HasExtension(validate_pb2.field):
        return options.Extensions[validate_pb2.field]
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _subscript(key: Any) -> str:
    """protovalidate's path subscript of a map key: `["k"]`, `[1]`, `[true]`."""
    return f"[{_fmt(key)}]"


def _unsupported(where: str, what: str) -> UnsupportedRule:
    return UnsupportedRule(
        f"{where}: (buf.validate.field).{what} is not supported by server.core.contract_rules; use the "
        "standard rules listed in docs/ARCHITECTURE.md or enforce it in the capability's rules.py"
    )


def _size_tests(kind: str, values: dict[str, Any], unit: str) -> list[ValueTest]:
    """Length/size rules (`len`, `min_len`, `max_len`, `min_items`, ...): `values` holds those set."""
    tests: list[ValueTest] = []
    for name, (op, words) in _SIZE_RULES.items():
        if name in values:
            n = values[name]
            tests.append((lambda v, n=n, op=op: op(len(v), n), f"{kind}.{name}", f"{words(unit)} {n} {unit}"))
    return tests


_SIZE_RULES = {
    "len": (operator.eq, lambda unit: "must be"),
    "min_len": (operator.ge, lambda unit: "must be at least"),
    "max_len": (operator.le, lambda unit: "must be at most"),
    "min_items": (operator.ge, lambda unit: "must contain at least"),
    "max_items": (operator.le, lambda unit: "must contain no more than"),
    "min_pairs": (operator.ge, lambda unit: "map must be at least"),
    "max_pairs": (operator.le, lambda unit: "map must be at most"),
}


def _membership_tests(kind: str, values: dict[str, Any]) -> list[ValueTest]:
    """`in` / `not_in` rules."""
    tests: list[ValueTest] = []
    if "in" in values:
        allowed = frozenset(values["in"])
        tests.append((allowed.__contains__, f"{kind}.in", f"must be in list {list(values['in'])}"))
    if "not_in" in values:
        refused = frozenset(values["not_in"])
        listed = list(values["not_in"])
        tests.append((lambda v: v not in refused, f"{kind}.not_in", f"must not be in list {listed}"))
    return tests


def _set_rules(rules) -> dict[str, Any]:
    return {fd.name: value for fd, value in rules.ListFields() if fd.name not in _DESCRIPTIVE}


def _number_tests(kind: str, rules, where: str) -> list[ValueTest]:
    values = _set_rules(rules)
    _only(kind, values, {"const", "lt", "lte", "gt", "gte", "in", "not_in"}, where)
    tests: list[ValueTest] = []
    is_float = kind in ("float", "double")
    if "const" in values:
        const = values["const"]
        tests.append((lambda v: v == const, f"{kind}.const", f"must equal {_fmt(const)}"))
    lower = next(((n, values[n]) for n in ("gt", "gte") if n in values), None)
    upper = next(((n, values[n]) for n in ("lt", "lte") if n in values), None)
    if lower or upper:
        tests.append(_range_test(kind, lower, upper, is_float))
    return tests + _membership_tests(kind, values)


_WORDS = {
    "gt": "greater than",
    "gte": "greater than or equal to",
    "lt": "less than",
    "lte": "less than or equal to",
}
_OPS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _range_test(kind: str, lower, upper, is_float: bool) -> ValueTest:
    """protovalidate's range rules: one bound (`int32.gte`), both (`int32.gte_lte`), or, when the upper
    bound is below the lower one, the values outside the band (`int32.gte_lte_exclusive`). NaN fails."""
    if lower and upper:
        (lo_name, lo), (hi_name, hi) = lower, upper
        above, below = _OPS[lo_name], _OPS[hi_name]
        exclusive = hi < lo
        rule = f"{kind}.{lo_name}_{hi_name}" + ("_exclusive" if exclusive else "")
        joiner = "or" if exclusive else "and"
        message = f"must be {_WORDS[lo_name]} {_fmt(lo)} {joiner} {_WORDS[hi_name]} {_fmt(hi)}"
        if exclusive:
            test = lambda v: above(v, lo) or below(v, hi)  # noqa: E731
        else:
            test = lambda v: above(v, lo) and below(v, hi)  # noqa: E731
    else:
        name, bound = lower or upper
        op = _OPS[name]
        rule, message = f"{kind}.{name}", f"must be {_WORDS[name]} {_fmt(bound)}"
        test = lambda v: op(v, bound)  # noqa: E731
    if is_float:
        return (lambda v: not math.isnan(v) and test(v)), rule, message
    return test, rule, message


def _pattern(pattern: str, where: str):
    """`pattern`'s search function with protovalidate's meaning: `$` outside a class is the end of the text
    (Python's `$` also matches before a final newline, so it becomes `\\Z`). Escapes whose Unicode meaning
    differs between the two engines are refused."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            escape = pattern[i : i + 2]
            if escape[1:] in ("s", "S", "w", "W", "d", "D", "b", "B"):
                raise UnsupportedRule(
                    f"{where}: pattern {pattern!r} uses {escape}, whose meaning differs between Python's re "
                    "and protovalidate's regex engine; spell the character class out"
                )
            out.append(escape)
            i += 2
            continue
        if in_class:
            in_class = ch != "]" or out[-1] == "["
        elif ch == "[":
            in_class = True
        elif ch == "$":
            ch = "\\Z"
        out.append(ch)
        i += 1
    return re.compile("".join(out)).search


def _only(kind: str, values: dict[str, Any], supported: set[str], where: str) -> None:
    for name in values:
        if name not in supported:
            raise _unsupported(where, f"{kind}.{name}")


_STRING_RULES = {"const", "len", "min_len", "max_len", "pattern", "prefix", "in", "not_in", "uuid"}


def _string_tests(rules, where: str, *, required: bool = False) -> list[ValueTest]:
    values = _set_rules(rules)
    _only("string", values, _STRING_RULES, where)
    tests = _size_tests("string", values, "characters")
    if "const" in values:
        const = values["const"]
        tests.append((lambda v: v == const, "string.const", f"must equal `{const}`"))
    if "pattern" in values:
        search, pattern = _pattern(values["pattern"], where), values["pattern"]
        mismatch = f"does not match regex pattern `{pattern}`"
        tests.append((lambda v: search(v) is not None, "string.pattern", mismatch))
    if "prefix" in values:
        prefix = values["prefix"]
        tests.append((lambda v: v.startswith(prefix), "string.prefix", f"does not have prefix `{prefix}`"))
    tests += _membership_tests("string", values)
    if values.get("uuid"):
        if not required:  # a required field's empty value is reported as `required` alone
            tests.append((bool, "string.uuid_empty", "value is empty, which is not a valid UUID"))
        tests.append((lambda v: not v or _UUID(v) is not None, "string.uuid", "must be a valid UUID"))
    return tests


def _bytes_tests(rules, where: str) -> list[ValueTest]:
    values = _set_rules(rules)
    _only("bytes", values, {"len", "min_len", "max_len"}, where)
    return _size_tests("bytes", values, "bytes")


def _enum_tests(rules, field: FieldDescriptor, where: str) -> list[ValueTest]:
    values = _set_rules(rules)
    _only("enum", values, {"defined_only", "const", "in", "not_in"}, where)
    tests: list[ValueTest] = []
    if values.get("defined_only"):
        defined = frozenset(v.number for v in field.enum_type.values)
        undefined = "value must be one of the defined enum values"
        tests.append((defined.__contains__, "enum.defined_only", undefined))
    if "const" in values:
        const = values["const"]
        tests.append((lambda v: v == const, "enum.const", f"must equal {const}"))
    return tests + _membership_tests("enum", values)


def _bool_tests(rules, where: str) -> list[ValueTest]:
    values = _set_rules(rules)
    _only("bool", values, {"const"}, where)
    if "const" not in values:
        return []
    const = values["const"]
    return [(lambda v: v == const, "bool.const", f"must equal {_fmt(const)}")]


def _scalar_tests(field: FieldDescriptor, rules, where: str) -> list[ValueTest]:
    """The value tests of one scalar value of `field` (the field itself, or one repeated item / map entry)."""
    if rules is None:
        return []
    kind = rules.WhichOneof("type")
    if kind is None:
        return []
    expected = _SCALAR_KINDS.get(field.type)
    if kind != expected:
        raise _unsupported(where, f"{kind} (on a field of type {expected or 'message'})")
    type_rules = getattr(rules, kind)
    if kind == "string":
        return _string_tests(type_rules, where, required=rules.required)
    if kind == "bytes":
        return _bytes_tests(type_rules, where)
    if kind == "enum":
        return _enum_tests(type_rules, field, where)
    if kind == "bool":
        return _bool_tests(type_rules, where)
    return _number_tests(kind, type_rules, where)


def _check_rule_header(rules: validate_pb2.FieldRules, where: str) -> None:
    for fd, _ in rules.ListFields():
        if fd.name not in ("required", "ignore") and fd.containing_oneof is None:
            raise _unsupported(where, fd.name)
    if rules.ignore not in (validate_pb2.IGNORE_UNSPECIFIED, validate_pb2.IGNORE_IF_ZERO_VALUE):
        raise _unsupported(where, f"ignore = {validate_pb2.Ignore.Name(rules.ignore)}")


class ContractRules:
    """Compiles and caches the checks of message types (cycles, as in google.protobuf.Struct, included)."""

    def __init__(self) -> None:
        self._checks: dict[str, MessageCheck | None] = {}
        self._pending: dict[str, list[MessageCheck | None]] = {}

    def check_for(self, descriptor: Descriptor) -> RequestCheck | None:
        """The check of a request type: its violations, in field order ([] when valid); None when the type
        has nothing to check at all (then the pipeline skips it)."""
        check = self.message_check(descriptor)
        if check is None:
            return None

        def request_check(message) -> list[FieldViolation]:
            out: list[FieldViolation] = []
            check(message, "", out)
            return out

        return request_check

    def message_check(self, descriptor: Descriptor) -> MessageCheck | None:
        name = descriptor.full_name
        if name in self._checks:
            return self._checks[name]
        if name in self._pending:  # a cycle: call through the cell filled when the outer compilation ends
            cell = self._pending[name]
            return lambda message, prefix, out: cell[0] and cell[0](message, prefix, out)
        cell: list[MessageCheck | None] = [None]
        self._pending[name] = cell
        try:
            check = self._compile_message(descriptor)
        finally:
            del self._pending[name]
        cell[0] = check
        self._checks[name] = check
        return check

    def _compile_message(self, descriptor: Descriptor) -> MessageCheck | None:
        options = descriptor.GetOptions()
        if options.HasExtension(validate_pb2.message):
            rules = options.Extensions[validate_pb2.message]
            if rules.disabled:
                return None
            if rules.ListFields():
                raise UnsupportedRule(f"{descriptor.full_name}: (buf.validate.message) rules are unsupported")
        for oneof in descriptor.oneofs:
            if oneof.GetOptions().HasExtension(validate_pb2.oneof):
                raise UnsupportedRule(f"{oneof.full_name}: (buf.validate.oneof) rules are not supported")
        checks = [c for c in (self._compile_field(f) for f in descriptor.fields) if c is not None]
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]

        def check_message(message, prefix: str, out: list[FieldViolation]) -> None:
            for check in checks:
                check(message, prefix, out)

        return check_message

    def _compile_field(self, field: FieldDescriptor) -> MessageCheck | None:
        where = field.full_name
        rules = field_rules(field)
        if rules is not None:
            _check_rule_header(rules, where)
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                return self._compile_map(field, rules, where)
            return self._compile_repeated(field, rules, where)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self._compile_message_field(field, rules, where)
        return _compile_scalar(field, rules, where)

    def _compile_message_field(self, field, rules, where) -> MessageCheck | None:
        if rules is not None and rules.WhichOneof("type") is not None:
            raise _unsupported(where, f"{rules.WhichOneof('type')} (on a message field)")
        required = rules is not None and rules.required
        nested = self.message_check(field.message_type)
        if not required and nested is None:
            return None
        name = field.name
        has = operator.methodcaller("HasField", name)
        get = operator.attrgetter(name)

        def check_message_field(message, prefix: str, out: list[FieldViolation]) -> None:
            if not has(message):
                if required:
                    out.append(FieldViolation(prefix + name, "value is required", "required"))
                return
            if nested is not None:
                nested(get(message), f"{prefix}{name}.", out)

        return check_message_field

    def _item_check(self, field: FieldDescriptor, rules, where: str):
        """(check of one item, given the item and its path) for repeated items and map values."""
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if rules is not None and (rules.WhichOneof("type") is not None or rules.required):
                raise _unsupported(where, "rules on message items")
            nested = self.message_check(field.message_type)
            if nested is None:
                return None
            return lambda item, path, out: nested(item, path + ".", out)
        return _value_check(field, rules, where)

    def _compile_repeated(self, field, rules, where) -> MessageCheck | None:
        kind = rules.WhichOneof("type") if rules is not None else None
        if kind not in (None, "repeated"):
            raise _unsupported(where, f"{kind} (on a repeated field)")
        list_tests: list[ValueTest] = []
        item_rules = None
        if kind == "repeated":
            values = _set_rules(rules.repeated)
            _only("repeated", values, {"min_items", "max_items", "unique", "items"}, where)
            list_tests = _size_tests("repeated", values, "item(s)")
            if values.get("unique"):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    raise _unsupported(where, "repeated.unique (on messages)")
                duplicates = "repeated value must contain unique items"
                list_tests.append((lambda v: len(set(v)) == len(v), "repeated.unique", duplicates))
            if "items" in values:
                item_rules = values["items"]
                _check_rule_header(item_rules, f"{where}[]")
        item = self._item_check(field, item_rules, f"{where}[]")
        required = rules is not None and rules.required
        ignore_empty = rules is not None and rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE
        if not (list_tests or item or required):
            return None
        name = field.name
        get = operator.attrgetter(name)
        # an empty list has no items, and the list tests' verdict on it is known now (min_items aside)
        empty_passes = ignore_empty or all(test(()) for test, _, _ in list_tests)

        def check_repeated(message, prefix: str, out: list[FieldViolation]) -> None:
            values = get(message)
            if not values:
                if required:
                    out.append(FieldViolation(prefix + name, "value is required", "required"))
                    return
                if empty_passes:
                    return
            for test, rule, text in list_tests:
                if not test(values):
                    out.append(FieldViolation(prefix + name, text, rule))
            if item is not None:
                for i, value in enumerate(values):
                    item(value, f"{prefix}{name}[{i}]", out)

        return check_repeated

    def _compile_map(self, field, rules, where) -> MessageCheck | None:
        kind = rules.WhichOneof("type") if rules is not None else None
        if kind not in (None, "map"):
            raise _unsupported(where, f"{kind} (on a map field)")
        entry = field.message_type
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        size_tests: list[ValueTest] = []
        key_rules = value_rules = None
        if kind == "map":
            values = _set_rules(rules.map)
            _only("map", values, {"min_pairs", "max_pairs", "keys", "values"}, where)
            size_tests = _size_tests("map", values, "entries")
            key_rules, value_rules = values.get("keys"), values.get("values")
            for part, part_rules in (("keys", key_rules), ("values", value_rules)):
                if part_rules is not None:
                    _check_rule_header(part_rules, f"{where}.{part}")
        key_check = _value_check(key_field, key_rules, f"{where}.keys")
        value_check = self._item_check(value_field, value_rules, f"{where}.values")
        required = rules is not None and rules.required
        if not (size_tests or key_check or value_check or required):
            return None
        name = field.name
        get = operator.attrgetter(name)

        def check_map(message, prefix: str, out: list[FieldViolation]) -> None:
            entries = get(message)
            if not entries:
                if required:
                    out.append(FieldViolation(prefix + name, "value is required", "required"))
                return
            for test, rule, text in size_tests:
                if not test(entries):
                    out.append(FieldViolation(prefix + name, text, rule))
            for key, value in entries.items():
                path = f"{prefix}{name}{_subscript(key)}"
                if key_check is not None:
                    key_check(key, path, out)
                if value_check is not None:
                    value_check(value, path, out)

        return check_map


def _value_check(field: FieldDescriptor, rules, where: str):
    """The check of one scalar value (a repeated item or a map key/value), given the value and its path."""
    if rules is not None and rules.required:
        raise _unsupported(where, "required (on items)")
    tests = _scalar_tests(field, rules, where)
    is_string = field.type == FieldDescriptor.TYPE_STRING
    if not tests and not is_string:
        return None
    ignore_zero = rules is not None and rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE
    zero = _ZERO.get(_SCALAR_KINDS[field.type], 0)

    def check_value(value, path: str, out: list[FieldViolation]) -> None:
        if is_string and "\x00" in value:
            out.append(FieldViolation(path, _NUL_MESSAGE, NO_NUL))
            return
        if ignore_zero and value == zero:
            return
        for test, rule, text in tests:
            if not test(value):
                out.append(FieldViolation(path, text, rule))

    return check_value


def _compile_scalar(field: FieldDescriptor, rules, where: str) -> MessageCheck | None:
    tests = _scalar_tests(field, rules, where)
    is_string = field.type == FieldDescriptor.TYPE_STRING
    required = rules is not None and rules.required
    if not (tests or required or is_string):
        return None
    name = field.name
    get = operator.attrgetter(name)
    zero = _ZERO.get(_SCALAR_KINDS[field.type], 0)
    ignore_zero = rules is not None and rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE
    if field.has_presence:  # proto3 `optional` or a oneof member: rules apply only when it is set
        has = operator.methodcaller("HasField", name)

        def is_unset(message, value) -> bool:
            return not has(message) or (ignore_zero and value == zero)
    else:

        def is_unset(message, value) -> bool:
            return value == zero

    skip_unset = ignore_zero or field.has_presence
    # The zero value (an unset field, the most common case) passes or fails the same way every time: when
    # it passes, set or not, it needs no further look.
    zero_passes = not required and all(test(zero) for test, _, _ in tests)

    def check_scalar(message, prefix: str, out: list[FieldViolation]) -> None:
        value = get(message)
        if zero_passes and value == zero:
            return
        if is_string and "\x00" in value:
            out.append(FieldViolation(prefix + name, _NUL_MESSAGE, NO_NUL))
            return
        if (required or skip_unset) and is_unset(message, value):
            if required:
                out.append(FieldViolation(prefix + name, "value is required", "required"))
            return
        for test, rule, text in tests:
            if not test(value):
                out.append(FieldViolation(prefix + name, text, rule))

    if tests and {rule for _, rule, _ in tests} <= _UUID_RULES:
        # An id field (the most common rule, on every hot path): a value that is a UUID is not empty, holds
        # no NUL and passes every test, so one match settles it; anything else takes the full check.
        def check_uuid(message, prefix: str, out: list[FieldViolation]) -> None:
            if _UUID(get(message)) is None:
                check_scalar(message, prefix, out)

        return check_uuid
    return check_scalar
