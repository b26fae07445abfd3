"""Condition operators (sandbox/iam/conditions.py), as the IAM User Guide's
"Condition operators" and "Single-valued vs. multivalued context keys" pages
describe them."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.iam import Request, authorize, parse_policy
from sandbox.iam.conditions import OPERATORS, parse_conditions
from sandbox.iam.principals import user

ACCOUNT = "123456789012"
BOB = user(ACCOUNT, "bob")


def holds(block, context):
    """Whether every condition of ``block`` holds for ``context`` (keys any case)."""
    lowered = {k.lower(): v for k, v in context.items()}
    return all(c.holds(lowered) for c in parse_conditions(block, "Condition"))


# (operator, policy values, request value, expected); None = key missing
CASES = [
    # strings
    ("StringEquals", "abc", "abc", True),
    ("StringEquals", "abc", "ABC", False),
    ("StringEquals", ["x", "abc"], "abc", True),  # values are ORed
    ("StringEquals", "abc", None, False),  # a missing key is false ...
    ("StringNotEquals", "abc", "abd", True),
    ("StringNotEquals", ["abc", "abd"], "abd", False),  # ... negated: matches none
    ("StringNotEquals", "abc", None, True),  # ... except for negated operators
    ("StringEqualsIgnoreCase", "ABC", "abc", True),
    ("StringNotEqualsIgnoreCase", "ABC", "abc", False),
    ("StringLike", "arn:*:bucket/?", "arn:aws:bucket/x", True),
    ("StringLike", "a.c", "abc", False),  # no regex leakage
    ("StringLike", "a*", None, False),
    ("StringNotLike", "a*", "bcd", True),
    ("StringNotLike", "a*", "abc", False),
    ("StringNotLike", "a*", None, True),
    ("StringEqualsIfExists", "abc", None, True),
    ("StringEqualsIfExists", "abc", "abd", False),
    ("StringLikeIfExists", "a*", "abc", True),
    # numbers
    ("NumericEquals", "10", 10, True),
    ("NumericEquals", "10", "10.0", True),
    ("NumericNotEquals", "10", 11, True),
    ("NumericLessThan", "10", 9, True),
    ("NumericLessThan", "10", 10, False),
    ("NumericLessThanEquals", "10", 10, True),
    ("NumericGreaterThan", "10", 11, True),
    ("NumericGreaterThanEquals", "10", 9, False),
    ("NumericLessThan", "10", "not a number", False),
    ("NumericLessThan", "10", None, False),
    ("NumericLessThanIfExists", "10", None, True),
    # dates: ISO 8601 or epoch seconds, either side
    ("DateGreaterThan", "2020-01-01T00:00:00Z", "2026-11-27T12:00:00Z", True),
    ("DateLessThan", "2020-01-01T00:00:00Z", "2026-11-27T12:00:00Z", False),
    ("DateEquals", "2020-01-01T00:00:00Z", "1577836800", True),
    ("DateNotEquals", "2020-01-01T00:00:00Z", 1577836801, True),
    ("DateLessThanEquals", "1577836800", "2020-01-01T00:00:00+00:00", True),
    ("DateGreaterThanEquals", "2020-01-01", "2019-12-31T23:59:59Z", False),
    ("DateLessThan", "2020-01-01T00:00:00Z", None, False),
    # booleans
    ("Bool", "true", True, True),
    ("Bool", "true", "true", True),
    ("Bool", "false", True, False),
    ("Bool", "true", None, False),
    ("BoolIfExists", "true", None, True),
    # binary: base64 in the policy
    ("BinaryEquals", base64.b64encode(b"\x00\x01").decode(), b"\x00\x01", True),
    ("BinaryEquals", base64.b64encode(b"\x00\x01").decode(), b"\x00\x02", False),
    # IP addresses and networks
    ("IpAddress", "203.0.113.0/24", "203.0.113.7", True),
    ("IpAddress", ["10.0.0.0/8", "203.0.113.0/24"], "10.1.2.3", True),
    ("IpAddress", "203.0.113.0/24", "198.51.100.1", False),
    ("IpAddress", "2001:db8::/32", "2001:db8::1", True),
    ("IpAddress", "203.0.113.0/24", "2001:db8::1", False),
    ("IpAddress", "203.0.113.0/24", "not an ip", False),
    ("IpAddress", "203.0.113.0/24", None, False),
    ("NotIpAddress", "203.0.113.0/24", "198.51.100.1", True),
    ("NotIpAddress", "203.0.113.0/24", "203.0.113.7", False),
    ("NotIpAddress", "203.0.113.0/24", None, True),
    # ARNs: part by part
    ("ArnEquals", "arn:aws:sqs:us-east-1:123456789012:q", "arn:aws:sqs:us-east-1:123456789012:q",
     True),
    ("ArnLike", "arn:aws:sqs:*:123456789012:q*", "arn:aws:sqs:us-east-1:123456789012:q1", True),
    ("ArnLike", "arn:aws:sqs:*:123456789012:q*", "arn:aws:sqs:us-east-1:999999999999:q1", False),
    ("ArnLike", "arn:aws:sqs:*", "arn:aws:sqs:us-east-1:123456789012:q", False),
    ("ArnLike", "arn:aws:sqs:*:*:*", "not-an-arn", False),
    ("ArnNotLike", "arn:aws:sqs:*:*:*", "arn:aws:sns:us-east-1:123456789012:t", True),
    ("ArnNotEquals", "arn:aws:sqs:*:*:q", "arn:aws:sqs:us-east-1:123456789012:q", False),
    ("ArnNotLike", "arn:aws:sqs:*:*:*", None, True),
    ("ArnLikeIfExists", "arn:aws:sqs:*:*:*", None, True),
    ("ArnLike", "arn:aws:sqs:*:*:*", None, False),
    # Null: "true" means "the key is absent"
    ("Null", "true", None, True),
    ("Null", "true", "x", False),
    ("Null", "false", "x", True),
    ("Null", "false", None, False),
]


@pytest.mark.parametrize(("operator", "values", "request_value", "expected"), CASES)
def test_operator(operator, values, request_value, expected):
    context = {} if request_value is None else {"aws:SomeKey": request_value}
    assert holds({operator: {"aws:SomeKey": values}}, context) is expected


def test_condition_keys_match_case_insensitively():
    assert holds({"StringEquals": {"AWS:SourceAccount": ACCOUNT}}, {"aws:sourceaccount": ACCOUNT})


def test_several_keys_and_operators_are_anded():
    block = {"StringEquals": {"aws:SourceAccount": ACCOUNT, "aws:username": "bob"},
             "ArnLike": {"aws:SourceArn": "arn:aws:sqs:*:*:orders"}}
    both = {"aws:SourceAccount": ACCOUNT, "aws:username": "bob",
            "aws:SourceArn": "arn:aws:sqs:us-east-1:123456789012:orders"}
    assert holds(block, both)
    for key in both:
        assert not holds(block, {k: v for k, v in both.items() if k != key}), key
    assert not holds(block, {**both, "aws:username": "alice"})


# Multivalued keys (aws:TagKeys style). ForAllValues is true for a missing or
# empty key; ForAnyValue is false then.
SET_CASES = [
    ("ForAllValues:StringEquals", ["a", "b"], ["a"], True),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "b"], True),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "c"], False),
    ("ForAllValues:StringEquals", ["a", "b"], [], True),
    ("ForAllValues:StringEquals", ["a", "b"], None, True),
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "b"], True),
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "d"], False),
    ("ForAnyValue:StringEquals", ["a", "b"], [], False),
    ("ForAnyValue:StringEquals", ["a", "b"], None, False),
    ("ForAnyValue:StringEqualsIfExists", ["a"], None, True),
    ("ForAnyValue:StringLike", ["a*"], ["xx", "ab"], True),
    # negated inside a set operator: a value passes when it matches none
    ("ForAnyValue:StringNotEquals", ["a"], ["a", "b"], True),
    ("ForAnyValue:StringNotEquals", ["a"], ["a"], False),
    ("ForAllValues:StringNotEquals", ["a", "b"], ["c", "d"], True),
    ("ForAllValues:StringNotEquals", ["a", "b"], ["c", "a"], False),
    ("ForAllValues:StringNotLike", ["secret*"], ["public", "open"], True),
    ("ForAnyValue:IpAddress", ["10.0.0.0/8"], ["192.168.0.1", "10.0.0.1"], True),
    ("ForAllValues:NumericLessThan", ["10"], [1, 2, 11], False),
]


@pytest.mark.parametrize(("operator", "values", "request_values", "expected"), SET_CASES)
def test_set_operators(operator, values, request_values, expected):
    context = {} if request_values is None else {"aws:TagKeys": request_values}
    assert holds({operator: {"aws:TagKeys": values}}, context) is expected


def test_a_single_valued_operator_on_several_request_values():
    # Positive: any value matches; negated: no value matches any policy value.
    assert holds({"StringEquals": {"aws:k": "a"}}, {"aws:k": ["b", "a"]})
    assert not holds({"StringNotEquals": {"aws:k": "a"}}, {"aws:k": ["b", "a"]})


def test_variables_in_condition_values():
    policy = parse_policy({"Version": "2012-10-17", "Statement": {
        "Effect": "Allow", "Action": "s3:*", "Resource": "*",
        "Condition": {"StringLike": {"s3:prefix": "home/${aws:username}/*"}}}})
    request = Request(BOB, "s3:ListBucket", "arn:aws:s3:::b",
                      {"aws:username": "bob", "s3:prefix": "home/bob/docs"})
    assert authorize(request, [policy], None, ACCOUNT).allowed
    other = Request(BOB, "s3:ListBucket", "arn:aws:s3:::b",
                    {"aws:username": "bob", "s3:prefix": "home/alice/docs"})
    assert not authorize(other, [policy], None, ACCOUNT).allowed
    defaulted = parse_policy({"Version": "2012-10-17", "Statement": {
        "Effect": "Allow", "Action": "s3:*", "Resource": "*",
        "Condition": {"StringEquals": {"s3:prefix": "${aws:username, 'nobody'}"}}}})
    nobody = Request(BOB, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "nobody"})
    assert authorize(nobody, [defaulted], None, ACCOUNT).allowed


# The documented examples: aws:SourceIp, aws:CurrentTime, aws:SecureTransport.
def test_deny_unless_from_an_address_range():
    policy = parse_policy({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "203.0.113.0/24"]},
                       "Bool": {"aws:ViaAWSService": "false"}}}]})

    def allowed(context):
        request = Request(BOB, "s3:GetObject", "arn:aws:s3:::b/k", context)
        return authorize(request, [policy], None, ACCOUNT).allowed

    assert allowed({"aws:SourceIp": "192.0.2.10", "aws:ViaAWSService": False})
    assert not allowed({"aws:SourceIp": "198.51.100.1", "aws:ViaAWSService": False})
    assert allowed({"aws:SourceIp": "198.51.100.1", "aws:ViaAWSService": True})


def test_allow_within_a_date_range_and_over_tls_only():
    policy = parse_policy({"Version": "2012-10-17", "Statement": {
        "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*",
        "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-04-01T00:00:00Z"},
                      "DateLessThan": {"aws:CurrentTime": "2030-06-30T23:59:59Z"},
                      "Bool": {"aws:SecureTransport": "true"}}}})

    def allowed(now, secure):
        request = Request(BOB, "lambda:InvokeFunction", "arn:aws:lambda:x:1:function:f",
                          {"aws:CurrentTime": now, "aws:SecureTransport": secure})
        return authorize(request, [policy], None, ACCOUNT).allowed

    assert allowed("2026-11-27T12:00:00Z", True)
    assert not allowed("2026-11-27T12:00:00Z", False)
    assert not allowed("2031-01-01T00:00:00Z", True)
    assert not allowed("2019-01-01T00:00:00Z", True)


# -- properties ----------------------------------------------------------------------
PAIRS = [("StringEquals", "StringNotEquals"),
         ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"),
         ("StringLike", "StringNotLike"), ("ArnLike", "ArnNotLike"),
         ("ArnEquals", "ArnNotEquals")]
TEXT = st.text(alphabet="aAb*?:.", max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PAIRS), st.lists(TEXT, min_size=1, max_size=3), TEXT)
def test_negated_operators_are_the_negation_when_the_key_is_present(pair, values, value):
    positive, negated = pair
    context = {"aws:k": value}
    assert holds({negated: {"aws:k": values}}, context) is not holds(
        {positive: {"aws:k": values}}, context)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(OPERATORS)), TEXT)
def test_if_exists_only_changes_the_missing_key_case(operator, value):
    values = {"Bool": "true", "BinaryEquals": "AAE=", "IpAddress": "10.0.0.0/8",
              "NotIpAddress": "10.0.0.0/8"}.get(operator, "1" if "Numeric" in operator
                                                else "2020-01-01" if "Date" in operator
                                                else value)
    block = {operator: {"aws:k": values}}
    if_exists = {operator + "IfExists": {"aws:k": values}}
    assert holds(if_exists, {"aws:k": value}) is holds(block, {"aws:k": value})
    assert holds(if_exists, {}) is True
    assert holds(block, {}) is OPERATORS[operator].negated
