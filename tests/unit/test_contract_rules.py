"""The contract's field rules as the server compiles them (server/core/contract_rules.py): they agree with
protovalidate, the reference implementation, on every request type of every service; a rule the compiler
cannot enforce stops the start; the server's own NUL rule covers every string field."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from hypothesis import HealthCheck, given, settings

from buf.validate import validate_pb2
from library.v1 import achievement_service_pb2 as achievements_pb
from server.core.contract_rules import NO_NUL, ContractRules, UnsupportedRule
from tests.support.contract import message_class, nul_variants, oracle_violations, request_types, requests

REQUEST_TYPES = request_types()
RULES = ContractRules()


def _compiled(message) -> set[tuple[str, str]]:
    check = RULES.check_for(message.DESCRIPTOR)
    return {(v.field, v.rule) for v in check(message)} if check else set()


@pytest.mark.parametrize("request_type", REQUEST_TYPES, ids=lambda d: d.full_name)
def test_compiled_checks_agree_with_protovalidate_on_valid_and_invalid_requests(request_type):
    verdicts: set[bool] = set()

    @settings(
        max_examples=60,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests(request_type))
    def agree(message):
        expected = oracle_violations(message)
        assert _compiled(message) == expected
        verdicts.add(not expected)

    agree()
    has_rules = RULES.check_for(request_type) is not None and bool(oracle_violations_possible(request_type))
    # The strategies reach both sides of the rules: some instances pass, and (with rules) some fail.
    assert True in verdicts
    if has_rules:
        assert False in verdicts


def oracle_violations_possible(request_type) -> bool:
    """Whether the type (or anything nested) carries a buf.validate rule at all."""
    seen: set[str] = set()

    def walk(descriptor) -> bool:
        if descriptor.full_name in seen:
            return False
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            if field.GetOptions().HasExtension(validate_pb2.field):
                return True
            if field.message_type is not None and walk(field.message_type):
                return True
        return False

    return walk(request_type)


@pytest.mark.parametrize("request_type", REQUEST_TYPES, ids=lambda d: d.full_name)
def test_a_nul_character_in_any_string_field_is_a_violation(request_type):
    for path, message in nul_variants(message_class(request_type)()):
        assert (path, NO_NUL) in _compiled(message), path


@pytest.mark.parametrize("name", ["FIRST_BLOOD", "a", "ach.v2-final_1", "x" * 128])
def test_the_contract_accepts_valid_achievement_api_names(name):
    request = achievements_pb.UpdateAchievementProgressRequest(
        product_id="0b7e5bd2-5d3c-4a8e-9a43-4a4d54b3b4c1", achievement_api_name=name
    )
    assert _compiled(request) == set()


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "required"),
        ("x" * 129, "string.max_len"),
        ("has space", "string.pattern"),
        ("émoji", "string.pattern"),
        ("semi;colon", "string.pattern"),
        ("a\n", "string.pattern"),  # `$` is the end of the text, as in protovalidate, not before a newline
    ],
)
def test_the_contract_refuses_invalid_achievement_api_names(name, rule):
    request = achievements_pb.UpdateAchievementProgressRequest(
        product_id="0b7e5bd2-5d3c-4a8e-9a43-4a4d54b3b4c1", achievement_api_name=name
    )
    assert _compiled(request) == {("achievement_api_name", rule)}
    assert oracle_violations(request) == {("achievement_api_name", rule)}


def _message_with_rule(name: str, configure) -> object:
    """A descriptor of a one-field message (in a throwaway file of the default pool) whose field's
    FieldRules `configure` sets."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"contract_rules_test/{name}.proto",
        package=f"contract_rules_test.{name}",
        syntax="proto3",
        dependency=["buf/validate/validate.proto"],
    )
    message = file.message_type.add(name="Probe")
    field = message.field.add(name="value", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    configure(field.options.Extensions[validate_pb2.field])
    pool = descriptor_pool.Default()
    pool.Add(file)
    return pool.FindMessageTypeByName(f"contract_rules_test.{name}.Probe")


@pytest.mark.parametrize(
    ("name", "configure"),
    [
        ("email", lambda rules: setattr(rules.string, "email", True)),
        ("cel", lambda rules: rules.cel.add(id="custom", expression="this != ''")),
        ("word_class", lambda rules: setattr(rules.string, "pattern", r"^\w+$")),
        ("always", lambda rules: setattr(rules, "ignore", validate_pb2.IGNORE_ALWAYS)),
        ("wrong_type", lambda rules: setattr(rules.int32, "gte", 0)),
    ],
)
def test_an_annotation_the_compiler_cannot_enforce_fails_the_start(name, configure):
    descriptor = _message_with_rule(name, configure)
    with pytest.raises(UnsupportedRule):
        ContractRules().check_for(descriptor)
