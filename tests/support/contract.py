"""The contract as tests see it: every request type of every service, hypothesis strategies that build
valid and invalid instances of any message from its buf.validate rules, and protovalidate (the oracle)'s
verdict in the same shape as the server's compiled checks.

Services are found by importing every generated `*_pb2` module of the contract packages, so services and
messages added to proto/ are covered without touching the tests.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator

import protovalidate
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from hypothesis import strategies as st

from server.core.contract_rules import field_rules

CONTRACT_PACKAGES = ("library.v1", "download.v1")

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Text the oracle can judge: no NUL (the server's own rule, not protovalidate's) and no lone surrogates
# (not encodable as UTF-8, so no client can send them).
ALPHABET = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
TEXT = st.text(ALPHABET, max_size=12)
MAX_DEPTH = 3
# Lists at their max_items bound are built only up to this many message items (a file list of 100,000
# entries each with its own chunk list would cost minutes per example), and never inside another long list.
MAX_LONG_MESSAGE_LIST = 1000


def services() -> Iterator[ServiceDescriptor]:
    """Every service of the contract packages, in a stable order."""
    for package in CONTRACT_PACKAGES:
        module = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
            if info.name.endswith("_pb2"):
                pb2 = importlib.import_module(f"{package}.{info.name}")
                yield from pb2.DESCRIPTOR.services_by_name.values()


def methods() -> list[MethodDescriptor]:
    return [method for service in services() for method in service.methods]


def request_types() -> list[Descriptor]:
    """Every request message type, once, in a stable order."""
    seen: dict[str, Descriptor] = {}
    for method in methods():
        seen.setdefault(method.input_type.full_name, method.input_type)
    return list(seen.values())


NUL_TEXT = "a\x00b"


def nul_variants(base) -> Iterator[tuple[str, object]]:
    """(field path, a copy of `base` holding "a\\x00b" at that path) for every string reachable from
    `base`'s type: scalar and repeated strings, map keys and values, in nested messages too (3 levels)."""
    for path, put in _nul_setters(base.DESCRIPTOR, "", 0):
        message = type(base)()
        message.CopyFrom(base)
        put(message)
        yield path, message


def _nul_setters(descriptor: Descriptor, prefix: str, depth: int):
    for field in descriptor.fields:
        name, path = field.name, prefix + field.name
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            if key.type == FieldDescriptor.TYPE_STRING:
                yield (
                    f"{path}[{json.dumps(NUL_TEXT)}]",
                    lambda m, n=name, v=value: _put_map(m, n, v, NUL_TEXT),
                )
            if value.type == FieldDescriptor.TYPE_STRING and key.type == FieldDescriptor.TYPE_STRING:
                yield f'{path}["k"]', lambda m, n=name: getattr(m, n).__setitem__("k", NUL_TEXT)
        elif field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                yield f"{path}[0]", lambda m, n=name: _put_first(getattr(m, n), NUL_TEXT)
            else:
                yield path, lambda m, n=name: setattr(m, n, NUL_TEXT)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < MAX_DEPTH:
            if field.is_repeated:
                for inner_path, put in _nul_setters(field.message_type, f"{path}[0].", depth + 1):
                    yield inner_path, lambda m, n=name, put=put: put(_first(getattr(m, n)))
            else:
                for inner_path, put in _nul_setters(field.message_type, f"{path}.", depth + 1):
                    yield inner_path, lambda m, n=name, put=put: put(getattr(m, n))


def _put_map(message, name: str, value_field: FieldDescriptor, key: str) -> None:
    entries = getattr(message, name)
    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
        entries[key].SetInParent()
    else:
        entries[key] = value_field.default_value


def _put_first(values, text: str) -> None:
    if values:
        values[0] = text
    else:
        values.append(text)


def _first(items):
    return items[0] if items else items.add()


def message_class(descriptor: Descriptor):
    return message_factory.GetMessageClass(descriptor)


def oracle_violations(message) -> set[tuple[str, str]]:
    """protovalidate's (field path, rule id) of every violation of `message`."""
    return {(field_path(v.proto.field), v.proto.rule_id) for v in protovalidate.collect_violations(message)}


def field_path(path) -> str:
    """A protovalidate FieldPath as the server writes it: `items[2].product_id`, `labels["k"]`."""
    parts = []
    for element in path.elements:
        text = element.field_name
        subscript = element.subscript
        if subscript is not None:
            key = subscript.value
            text += f"[{json.dumps(key, ensure_ascii=False) if isinstance(key, (str, bool)) else key}]"
        parts.append(text)
    return ".".join(parts)


def _rules_of(field: FieldDescriptor, rules):
    """(kind, the type rules message) of a field's rules, or (None, None)."""
    if rules is None or rules.WhichOneof("type") is None:
        return None, None
    kind = rules.WhichOneof("type")
    return kind, getattr(rules, kind)


def _string_values(rules, valid: bool) -> st.SearchStrategy[str]:
    """Strings meant to pass `rules` (string rules); unless `valid`, their edges and any text too."""
    if rules is None:
        return TEXT
    lo = rules.min_len if rules.HasField("min_len") else 0
    hi = rules.max_len if rules.HasField("max_len") else None
    if rules.HasField("len"):
        lo = hi = rules.len
    options = []
    if rules.uuid:
        options += [st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())]
    if rules.HasField("pattern"):
        options.append(
            st.from_regex(rules.pattern.replace("$", r"\Z"))
            .map(lambda s: s.replace("\x00", ""))
            .filter(lambda s: lo <= len(s) and (hi is None or len(s) <= hi))
        )
    if rules.HasField("const"):
        options.append(st.just(rules.const))
    if getattr(rules, "in"):
        options.append(st.sampled_from(list(getattr(rules, "in"))))
    if rules.HasField("prefix"):
        options.append(TEXT.map(lambda s, p=rules.prefix: p + s))
    if not options:
        options.append(st.text(ALPHABET, min_size=lo, max_size=lo + 12 if hi is None else min(hi, lo + 12)))
    meant = st.one_of(*options)
    if rules.not_in:
        meant = meant.filter(lambda s: s not in rules.not_in)
    if valid:
        return meant
    edges = [st.just(""), TEXT, *(st.just("x" * n) for n in (lo - 1, (hi or 0) + 1) if n >= 0)]
    if rules.not_in:
        edges.append(st.sampled_from(list(rules.not_in)))
    return st.one_of(meant, meant, *edges)


def _number_values(field: FieldDescriptor, rules, valid: bool) -> st.SearchStrategy:
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        width = 32 if field.type == FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(width=width, allow_nan=not valid)
    lo, hi = _INT_RANGES[field.type]
    anywhere = st.integers(lo, hi)
    if rules is None:
        return st.one_of(st.integers(max(lo, -3), 3), anywhere)
    low = rules.gt + 1 if rules.HasField("gt") else rules.gte if rules.HasField("gte") else lo
    high = rules.lt - 1 if rules.HasField("lt") else rules.lte if rules.HasField("lte") else hi
    if rules.HasField("const"):
        meant = st.just(rules.const)
    elif getattr(rules, "in"):
        meant = st.sampled_from(list(getattr(rules, "in")))
    elif low <= high:
        meant = st.one_of(st.integers(low, min(high, low + 1000)), st.integers(low, high))
    else:  # an exclusive range: values outside the band
        meant = st.one_of(st.integers(lo, high), st.integers(low, hi))
    if rules.not_in:
        meant = meant.filter(lambda n: n not in rules.not_in)
    if valid:
        return meant
    bounds = [getattr(rules, name) for name in ("gt", "gte", "lt", "lte", "const") if rules.HasField(name)]
    near = [b + d for b in bounds for d in (-1, 0, 1) if lo <= b + d <= hi]
    edges = [st.sampled_from(near)] if near else []
    if rules.not_in:
        edges.append(st.sampled_from(list(rules.not_in)))
    return st.one_of(meant, *edges, anywhere)


def _enum_values(field: FieldDescriptor, rules, valid: bool) -> st.SearchStrategy[int]:
    defined = [v.number for v in field.enum_type.values]
    if rules is not None and rules.HasField("const"):
        meant = st.just(rules.const)
    else:
        allowed = list(getattr(rules, "in")) if rules is not None and getattr(rules, "in") else defined
        refused = set(rules.not_in) if rules is not None else set()
        meant = st.sampled_from([n for n in allowed if n not in refused] or defined)
    return meant if valid else st.one_of(meant, st.integers(-2, 50))


def scalar_values(field: FieldDescriptor, rules, valid: bool = False) -> st.SearchStrategy:
    """Values of one scalar of `field` (the field, a repeated item or a map key/value) under `rules`:
    meant to pass them if `valid`, else anything from their edges to arbitrary values."""
    kind, type_rules = _rules_of(field, rules)
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string_values(type_rules if kind == "string" else None, valid)
    if field.type == FieldDescriptor.TYPE_BYTES:
        lo = type_rules.min_len if kind == "bytes" else 0
        hi = type_rules.max_len if kind == "bytes" and type_rules.HasField("max_len") else lo + 8
        return st.binary(min_size=lo, max_size=hi) if valid else st.binary(max_size=hi + 1)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if kind == "bool" and type_rules.HasField("const") and valid:
            return st.just(type_rules.const)
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_values(field, type_rules if kind == "enum" else None, valid)
    return _number_values(field, type_rules if kind else None, valid)


def requests(descriptor: Descriptor) -> st.SearchStrategy:
    """Instances of a request type: half of them meant to be valid, half anything."""
    return st.booleans().flatmap(lambda valid: messages(descriptor, valid=valid))


@st.composite
def messages(draw, descriptor: Descriptor, depth: int = 0, valid: bool = False, short: bool = False):
    """An instance of `descriptor`'s message built from its rules (see `scalar_values` for `valid`);
    `short`: no list longer than 3 items (inside a long list)."""
    message = message_class(descriptor)()
    for field in descriptor.fields:
        rules = field_rules(field)
        required = rules is not None and rules.required
        if not (required and valid) and not draw(st.sampled_from([True, True, False])):
            continue
        _fill(draw, message, field, rules, depth, valid, short)
    return message


def _fill(draw, message, field: FieldDescriptor, rules, depth: int, valid: bool, short: bool) -> None:
    name = field.name
    kind, type_rules = _rules_of(field, rules)
    if field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry:
        entry = field.message_type
        key_rules = type_rules.keys if kind == "map" and type_rules.HasField("keys") else None
        value_rules = type_rules.values if kind == "map" and type_rules.HasField("values") else None
        lo = type_rules.min_pairs if kind == "map" else 0
        hi = type_rules.max_pairs if kind == "map" and type_rules.HasField("max_pairs") else lo + 3
        key_values = scalar_values(entry.fields_by_name["key"], key_rules, valid)
        keys = draw(st.lists(key_values, min_size=lo if valid else 0, max_size=min(hi, lo + 3), unique=True))
        value_field = entry.fields_by_name["value"]
        target = getattr(message, name)
        for key in keys:
            if value_field.type != FieldDescriptor.TYPE_MESSAGE:
                target[key] = draw(scalar_values(value_field, value_rules, valid))
            elif depth < MAX_DEPTH:
                target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1, valid, short)))
            else:
                target[key].SetInParent()
        return
    if field.is_repeated:
        item_rules = type_rules.items if kind == "repeated" and type_rules.HasField("items") else None
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and depth >= MAX_DEPTH:
            return
        lo = type_rules.min_items if kind == "repeated" else 0
        hi = type_rules.max_items if kind == "repeated" and type_rules.HasField("max_items") else None
        sizes = [lo, lo + 1, lo + 2]
        if valid:
            sizes = [n for n in sizes if hi is None or n <= hi]
        else:
            sizes.append(lo - 1)
            if hi is not None and not short and (not is_message or hi <= MAX_LONG_MESSAGE_LIST):
                sizes += [hi, hi + 1]
        size = draw(st.sampled_from([n for n in sizes if n >= 0]))
        if is_message:
            item = messages(field.message_type, depth + 1, valid, short or size > 3)
        else:
            item = scalar_values(field, item_rules, valid)
        # A long list is copies of one item, so that sizes at max_items cost one draw.
        values = draw(st.lists(item, min_size=size, max_size=size)) if size <= 3 else [draw(item)] * size
        if is_message:
            for value in values:
                getattr(message, name).add().CopyFrom(value)
        else:
            getattr(message, name).extend(values)
        return
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if depth >= MAX_DEPTH:
            getattr(message, name).SetInParent()
        else:
            getattr(message, name).CopyFrom(draw(messages(field.message_type, depth + 1, valid, short)))
        return
    setattr(message, name, draw(scalar_values(field, rules, valid)))
