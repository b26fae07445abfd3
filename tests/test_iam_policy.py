"""The IAM policy engine (sandbox/iam): grammar, matching, evaluation.

Tables are drawn from the IAM User Guide's examples ("Policy evaluation
logic", "The difference between explicit and implicit denies", "Resource",
"NotAction"); properties are checked with hypothesis.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.errors import AccessDeniedException, MalformedPolicyDocumentException
from sandbox.iam import IDENTITY, RESOURCE, TRUST, Request, authorize, parse_policy
from sandbox.iam.matching import action_matches, arn_matches, resource_matches, wildcard_match
from sandbox.iam.principals import account_root, role_session, service, user

ACCOUNT = "123456789012"
OTHER = "111122223333"
FUNCTION = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:my-function"


def allow(action="*", resource="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action="*", resource="*", **extra):
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def doc(*statements, version="2012-10-17"):
    return {"Version": version, "Statement": list(statements)}


# -- grammar -------------------------------------------------------------------------
def test_statement_may_be_an_object_or_a_list():
    single = parse_policy({"Version": "2012-10-17", "Statement": allow("s3:GetObject")})
    listed = parse_policy(doc(allow("s3:GetObject")))
    assert single.statements == listed.statements
    assert single.statements[0].actions == ("s3:GetObject",)


def test_json_text_and_every_element_parse():
    policy = parse_policy(json.dumps({
        "Version": "2012-10-17", "Id": "default",
        "Statement": [{
            "Sid": "AllowS3", "Effect": "Allow",
            "Principal": {"AWS": [OTHER, f"arn:aws:iam::{ACCOUNT}:user/bob"],
                          "Service": "sqs.amazonaws.com"},
            "NotAction": ["iam:*"], "NotResource": "arn:aws:s3:::secret/*",
            "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
        }]}), RESOURCE)
    statement = policy.statements[0]
    assert policy.id == "default"
    assert statement.sid == "AllowS3"
    # An account id is read as that account's root.
    assert statement.principal.aws == (f"arn:aws:iam::{OTHER}:root",
                                       f"arn:aws:iam::{ACCOUNT}:user/bob")
    assert statement.principal.services == ("sqs.amazonaws.com",)
    assert statement.not_actions == ("iam:*",)
    assert statement.not_resources == ("arn:aws:s3:::secret/*",)
    assert statement.conditions[0].key == "aws:SourceAccount"


MALFORMED = [
    ("{not json", IDENTITY, "Syntax errors in policy"),
    ([], IDENTITY, "must be a JSON object"),
    ({"Version": "2012-10-17"}, IDENTITY, "Missing required field Statement"),
    ({"Version": "2013-01-01", "Statement": allow()}, IDENTITY, "Version"),
    ({"Version": "2012-10-17", "Statement": [], }, IDENTITY, "non-empty list"),
    ({"Statement": allow(), "Extra": 1}, IDENTITY, "unknown field Extra"),
    (doc({"Action": "s3:*", "Resource": "*"}), IDENTITY,
     "Statement[0]: Missing required field Effect"),
    (doc(allow(), {"Effect": "allow", "Action": "*", "Resource": "*"}), IDENTITY,
     "Statement[1]: Effect must be Allow or Deny"),
    (doc({"Effect": "Allow", "Resource": "*"}), IDENTITY, "Missing required field Action"),
    (doc({"Effect": "Allow", "Action": "*"}), IDENTITY, "Missing required field Resource"),
    (doc(allow(NotAction="s3:*")), IDENTITY, "Action and NotAction cannot both be present"),
    (doc(allow(NotResource="*")), IDENTITY, "Resource and NotResource"),
    (doc(allow("GetObject")), IDENTITY, "Actions/Conditions must be prefaced by a vendor"),
    (doc(allow("s3:Get.*")), IDENTITY, "prefaced by a vendor"),
    (doc(allow(resource="bucket")), IDENTITY, 'must be in ARN format or "*"'),
    (doc(allow(resource="arn:aws:*:us-east-1:1:x")), IDENTITY, "ARN format"),
    (doc(allow(Principal="*")), IDENTITY, "Policy document should not specify a principal."),
    (doc(allow()), RESOURCE, "Statement[0]: Missing required field Principal"),
    (doc(allow(Principal={"AWS": "bob"})), RESOURCE, 'Invalid principal in policy: "AWS":"bob"'),
    (doc(allow(Principal={"AWS": "arn:aws:iam::123456789012:user/*"})), RESOURCE,
     "Invalid principal"),
    (doc(allow(Principal={"Service": "not a service"})), RESOURCE, "Invalid principal"),
    (doc(allow(Principal={"Group": "x"})), RESOURCE, '"Group" is not a principal type'),
    (doc(allow(Principal="*", NotPrincipal="*")), RESOURCE, "Principal and NotPrincipal"),
    (doc({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
          "Action": "sts:AssumeRole", "Resource": "*"}), TRUST, "Has prohibited field Resource"),
    (doc(allow(Sid="a"), allow(Sid="a")), IDENTITY, "Statement IDs (SID) in a single policy"),
    (doc(allow(Sid=3)), IDENTITY, "Sid must be a string"),
    (doc(allow(Sid="my-sid")), IDENTITY, "Statement IDs (SID) must be alpha-numeric"),
    (doc(allow(action=[])), IDENTITY, "Statement[0].Action: must not be an empty list"),
    (doc(allow(Condition={"StringEqualz": {"aws:SourceAccount": "1"}})), IDENTITY,
     "Statement[0].Condition: Invalid Condition type : StringEqualz"),
    (doc(allow(Condition={"StringEquals": {"SourceAccount": "1"}})), IDENTITY,
     "must be prefaced by a vendor"),
    (doc(allow(Condition={"NumericLessThan": {"s3:max-keys": "ten"}})), IDENTITY,
     "value 'ten' is not valid for NumericLessThan"),
    (doc(allow(Condition={"IpAddress": {"aws:SourceIp": "300.0.0.0/8"}})), IDENTITY,
     "not valid for IpAddress"),
    (doc(allow(Condition={"NullIfExists": {"aws:SourceIp": "true"}})), IDENTITY,
     "Null takes neither IfExists"),
    (doc(allow(Condition={"ForSomeValues:StringLike": {"aws:TagKeys": "a"}})), IDENTITY,
     "set qualifier"),
    (doc(allow(Condition={"StringEquals": {"aws:SourceAccount": {"nested": 1}}})), IDENTITY,
     "must be a string, number or boolean"),
]


@pytest.mark.parametrize(("document", "kind", "fragment"), MALFORMED,
                         ids=[m[2][:40] for m in MALFORMED])
def test_malformed_documents_name_the_element(document, kind, fragment):
    with pytest.raises(MalformedPolicyDocumentException) as info:
        parse_policy(document, kind)
    assert fragment in str(info.value)
    assert info.value.code == "MalformedPolicyDocument"
    assert info.value.http_status == 400


def test_resource_policies_take_their_services_statement_ids():
    policy = parse_policy(doc(allow(Sid="from-queue.1", Principal="*")), RESOURCE)
    assert policy.statements[0].sid == "from-queue.1"


def test_missing_version_is_the_old_language_without_variables():
    policy = parse_policy({"Statement": allow(resource="arn:aws:s3:::${aws:username}")})
    assert policy.version == "2008-10-17"
    bob = user(ACCOUNT, "bob")
    request = Request(bob, "s3:GetObject", "arn:aws:s3:::bob", {"aws:username": "bob"})
    assert not authorize(request, [policy], None, ACCOUNT).allowed
    literal = Request(bob, "s3:GetObject", "arn:aws:s3:::${aws:username}", {})
    assert authorize(literal, [policy], None, ACCOUNT).allowed


# -- matching ------------------------------------------------------------------------
WILDCARDS = [
    ("*", "", True), ("*", "anything", True), ("a*c", "abbbc", True), ("a*c", "ab", False),
    ("a?c", "abc", True), ("a?c", "ac", False), ("a?c", "abbc", False),
    # no regular-expression leakage: these characters are literal
    ("a.c", "abc", False), ("a.c", "a.c", True), ("a+", "aa", False), ("a+", "a+", True),
    ("[ab]", "a", False), ("[ab]", "[ab]", True), ("a|b", "a", False), ("^a$", "a", False),
    ("a\\d", "a1", False), ("a\\d", "a\\d", True), ("(a)", "a", False), ("a{2}", "aa", False),
    ("x*", "x\ny", True),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), WILDCARDS)
def test_wildcards_are_star_and_question_mark_only(pattern, value, expected):
    assert wildcard_match(pattern, value) is expected


@pytest.mark.parametrize(("pattern", "action", "expected"), [
    ("lambda:InvokeFunction", "lambda:invokefunction", True),
    ("LAMBDA:invoke*", "lambda:InvokeFunction", True),
    ("lambda:Invoke?unction", "lambda:InvokeFunction", True),
    ("lambda:*", "lambda:GetFunction", True),
    ("lambda:*", "sqs:SendMessage", False),
    ("*", "sqs:SendMessage", True),
    ("lambda:Get*", "lambda:InvokeFunction", False),
])
def test_actions_match_case_insensitively(pattern, action, expected):
    assert action_matches(pattern, action) is expected


@pytest.mark.parametrize(("pattern", "resource", "expected"), [
    (FUNCTION, FUNCTION, True),
    (FUNCTION.upper(), FUNCTION, False),  # resources are case-sensitive
    ("arn:aws:lambda:*:123456789012:function:*", FUNCTION, True),
    ("arn:aws:lambda:us-east-1:123456789012:function:my-*", FUNCTION, True),
    ("arn:aws:lambda:us-east-1:123456789012:function:my-functio?", FUNCTION, True),
    ("arn:aws:lambda:us-east-1:123456789012:function:my.function", FUNCTION, False),
    ("arn:aws:lambda:us-east-1:111122223333:function:*", FUNCTION, False),
    # a * that ends a segment runs on across colons; one inside a segment does not
    ("arn:aws:lambda:*", FUNCTION, True),
    ("arn:aws:lambda:us-*-1:123456789012:function:my-function", FUNCTION, True),
    ("arn:aws:lambda:u*1:123456789012:function:my-function",
     "arn:aws:lambda:us:x1:123456789012:function:my-function", False),
    ("arn:aws:s3:::amzn-s3-demo-bucket/*", "arn:aws:s3:::amzn-s3-demo-bucket/a/b/c", True),
    ("arn:aws:s3:::amzn-s3-demo-bucket/*", "arn:aws:s3:::amzn-s3-demo-bucket-other/a", False),
])
def test_resource_patterns(pattern, resource, expected):
    assert resource_matches(pattern, resource) is expected


def test_arn_like_matches_each_of_the_six_parts_alone():
    assert arn_matches("arn:aws:sqs:*:123456789012:queue-*",
                       "arn:aws:sqs:us-east-1:123456789012:queue-1")
    assert not arn_matches("arn:aws:sqs:*", "arn:aws:sqs:us-east-1:123456789012:q")
    assert not arn_matches("arn:aws:sqs:us-*:123456789012:q",
                           "arn:aws:sqs:us-east-1:999:123456789012:q")
    assert arn_matches("arn:aws:lambda:*:*:function:f:*",
                       "arn:aws:lambda:us-east-1:1:function:f:prod")
    assert not arn_matches("arn:aws:s3:::bucket", "not-an-arn")


# -- evaluation: the User Guide's examples --------------------------------------------
BOB = user(ACCOUNT, "bob")

# "The difference between explicit and implicit denies": AllowGetList / DenyReports.
GET_LIST_DENY_REPORTS = doc(
    {"Sid": "AllowGetList", "Effect": "Allow", "Action": ["iam:Get*", "iam:List*"],
     "Resource": "*"},
    {"Sid": "DenyReports", "Effect": "Deny", "Action": "iam:*Report", "Resource": "*"})


@pytest.mark.parametrize(("action", "allowed", "explicit"), [
    ("iam:GetUser", True, False),
    ("iam:ListRoles", True, False),
    ("iam:GetOrganizationsAccessReport", False, True),
    ("iam:GenerateCredentialReport", False, True),
    ("iam:CreatePolicy", False, False),
])
def test_explicit_and_implicit_denies(action, allowed, explicit):
    policy = parse_policy(GET_LIST_DENY_REPORTS)
    decision = authorize(Request(BOB, action, "arn:aws:iam::123456789012:role/x", {}),
                         [policy], None, ACCOUNT)
    assert decision.allowed is allowed
    assert decision.explicit is explicit


def test_not_action_allows_everything_else():
    # "NotAction": allow everything except IAM.
    policy = parse_policy(doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}))
    assert authorize(Request(BOB, "s3:GetObject", "arn:aws:s3:::b/k", {}), [policy], None,
                     ACCOUNT).allowed
    assert not authorize(Request(BOB, "iam:CreateUser", "arn:aws:iam::1:user/x", {}),
                         [policy], None, ACCOUNT).allowed


def test_not_resource_denies_everything_but():
    policy = parse_policy(doc(
        allow("s3:*"),
        {"Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::public/*"]}))
    public = Request(BOB, "s3:GetObject", "arn:aws:s3:::public/a", {})
    secret = Request(BOB, "s3:GetObject", "arn:aws:s3:::secret/a", {})
    assert authorize(public, [policy], None, ACCOUNT).allowed
    decision = authorize(secret, [policy], None, ACCOUNT)
    assert not decision.allowed and decision.explicit


def test_policy_variables_in_resources():
    policy = parse_policy(doc(allow("s3:*", "arn:aws:s3:::home/${aws:username}/*")))
    context = {"aws:username": "bob"}
    assert authorize(Request(BOB, "s3:GetObject", "arn:aws:s3:::home/bob/x", context),
                     [policy], None, ACCOUNT).allowed
    assert not authorize(Request(BOB, "s3:GetObject", "arn:aws:s3:::home/alice/x", context),
                         [policy], None, ACCOUNT).allowed
    # no value for the variable: the resource matches nothing
    assert not authorize(Request(BOB, "s3:GetObject", "arn:aws:s3:::home//x", {}),
                         [policy], None, ACCOUNT).allowed


# Same-account and cross-account, with identity and resource policies
# (IAM User Guide, "Policy evaluation logic" and "Cross-account policy evaluation").
IDENTITY_ALLOW = doc(allow("lambda:InvokeFunction", FUNCTION))


def resource_policy(principal):
    return doc(allow("lambda:InvokeFunction", FUNCTION, Principal={"AWS": principal}))


@pytest.mark.parametrize(("caller_account", "identity", "resource", "allowed", "reason"), [
    # same account: either policy grants
    (ACCOUNT, False, None, False, "because no identity-based policy allows"),
    (ACCOUNT, True, None, True, None),
    (ACCOUNT, False, "user", True, None),
    # ... but naming only the account delegates to identity policies
    (ACCOUNT, False, "account", False, "because no identity-based policy allows"),
    (ACCOUNT, True, "account", True, None),
    # cross account: both must grant
    (OTHER, True, None, False, "because no resource-based policy allows"),
    (OTHER, False, "user", False, "because no identity-based policy allows"),
    (OTHER, False, "account", False, "because no identity-based policy allows"),
    (OTHER, True, "user", True, None),
    (OTHER, True, "account", True, None),
])
def test_same_and_cross_account(caller_account, identity, resource, allowed, reason):
    caller = user(caller_account, "bob")
    principal = {"user": caller.arn, "account": caller_account, None: None}[resource]
    resource_doc = parse_policy(resource_policy(principal), RESOURCE) if principal else None
    identity_docs = [parse_policy(IDENTITY_ALLOW)] if identity else []
    request = Request(caller, "lambda:InvokeFunction", FUNCTION, {})
    decision = authorize(request, identity_docs, resource_doc, ACCOUNT)
    assert decision.allowed is allowed
    if reason:
        message = decision.message(request)
        assert message == (f"User: {caller.arn} is not authorized to perform: "
                           f"lambda:InvokeFunction on resource: {FUNCTION} {reason} the "
                           f"lambda:InvokeFunction action")
        with pytest.raises(AccessDeniedException) as info:
            decision.raise_if_denied(request)
        assert info.value.http_status == 403


def test_explicit_deny_messages_name_the_policy_type():
    request = Request(BOB, "lambda:InvokeFunction", FUNCTION, {})
    identity_deny = parse_policy(doc(allow(), deny("lambda:*")))
    decision = authorize(request, [identity_deny], None, ACCOUNT)
    assert decision.message(request) == (
        f"User: {BOB.arn} is not authorized to perform: lambda:InvokeFunction on resource: "
        f"{FUNCTION} with an explicit deny in an identity-based policy")
    resource_deny = parse_policy(doc(deny(Principal="*")), RESOURCE)
    decision = authorize(request, [parse_policy(doc(allow()))], resource_deny, ACCOUNT)
    assert decision.message(request).endswith("with an explicit deny in a resource-based policy")


def test_root_is_allowed_in_its_account_unless_a_resource_policy_denies():
    root = account_root(ACCOUNT)
    request = Request(root, "lambda:InvokeFunction", FUNCTION, {})
    assert authorize(request, [], None, ACCOUNT).allowed
    deny_all = parse_policy(doc(deny(Principal="*")), RESOURCE)
    assert not authorize(request, [], deny_all, ACCOUNT).allowed
    # another account's root needs the resource policy
    other_root = account_root(OTHER)
    other = Request(other_root, "lambda:InvokeFunction", FUNCTION, {})
    assert not authorize(other, [], None, ACCOUNT).allowed
    assert authorize(other, [], parse_policy(resource_policy(OTHER), RESOURCE), ACCOUNT).allowed


def test_services_need_the_resource_policy():
    sqs = service("sqs.amazonaws.com")
    request = Request(sqs, "lambda:InvokeFunction", FUNCTION, {})
    decision = authorize(request, [], None, ACCOUNT)
    assert not decision.allowed
    assert "because no resource-based policy allows" in decision.message(request)
    granted = parse_policy(doc(allow("lambda:InvokeFunction", FUNCTION,
                                     Principal={"Service": "sqs.amazonaws.com"})), RESOURCE)
    assert authorize(request, [], granted, ACCOUNT).allowed
    other_service = Request(service("sns.amazonaws.com"), "lambda:InvokeFunction", FUNCTION, {})
    assert not authorize(other_service, [], granted, ACCOUNT).allowed


def test_role_sessions_match_their_role_and_session():
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/worker"
    session = role_session(role_arn, "my-function")
    assert session.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/worker/my-function"
    assert session.principal_arn == role_arn
    request = Request(session, "lambda:InvokeFunction", FUNCTION, {})
    for principal in (role_arn, session.arn):
        granted = parse_policy(resource_policy(principal), RESOURCE)
        assert authorize(request, [], granted, ACCOUNT).allowed
    other = parse_policy(resource_policy(f"arn:aws:iam::{ACCOUNT}:role/other"), RESOURCE)
    assert not authorize(request, [], other, ACCOUNT).allowed


def test_not_principal_applies_to_everyone_else():
    policy = parse_policy(doc(allow(Principal="*"), deny(NotPrincipal={"AWS": BOB.arn})),
                          RESOURCE)
    bob = Request(BOB, "s3:GetObject", "arn:aws:s3:::b/k", {})
    alice = Request(user(ACCOUNT, "alice"), "s3:GetObject", "arn:aws:s3:::b/k", {})
    assert authorize(bob, [], policy, ACCOUNT).allowed
    decision = authorize(alice, [], policy, ACCOUNT)
    assert not decision.allowed and decision.explicit


def test_trust_policies_must_name_the_caller_even_in_the_account():
    trust = parse_policy(doc({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                              "Action": "sts:AssumeRole"}), TRUST)
    role = f"arn:aws:iam::{ACCOUNT}:role/r"
    lambda_request = Request(service("lambda.amazonaws.com"), "sts:AssumeRole", role, {})
    assert authorize(lambda_request, [], trust, ACCOUNT, resource_policy_required=True).allowed
    bob_request = Request(BOB, "sts:AssumeRole", role, {})
    assert not authorize(bob_request, [parse_policy(doc(allow()))], trust, ACCOUNT,
                         resource_policy_required=True).allowed


# -- properties ----------------------------------------------------------------------
ACTIONS = ["lambda:InvokeFunction", "lambda:GetFunction", "sqs:SendMessage", "s3:GetObject"]
ACTION_PATTERNS = ACTIONS + ["*", "lambda:*", "lambda:Get*", "sqs:*", "s3:?etObject"]
RESOURCES = [FUNCTION, f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:other",
             f"arn:aws:sqs:us-east-1:{ACCOUNT}:queue"]
RESOURCE_PATTERNS = RESOURCES + ["*", "arn:aws:lambda:*", "arn:aws:sqs:*:*:*"]
CONDITIONS = [
    None,
    {"StringEquals": {"aws:PrincipalAccount": ACCOUNT}},
    {"StringNotEquals": {"aws:PrincipalAccount": ACCOUNT}},
    {"Bool": {"aws:SecureTransport": "true"}},
    {"StringLike": {"aws:username": "b*"}},
]
CALLERS = [user(ACCOUNT, "bob"), user(OTHER, "eve"), service("sqs.amazonaws.com"),
           account_root(ACCOUNT)]


@st.composite
def statements(draw, effect=None, with_principal=False):
    statement = {
        "Effect": effect or draw(st.sampled_from(["Allow", "Deny"])),
        "Action": draw(st.lists(st.sampled_from(ACTION_PATTERNS), min_size=1, max_size=2)),
        "Resource": draw(st.lists(st.sampled_from(RESOURCE_PATTERNS), min_size=1, max_size=2)),
    }
    condition = draw(st.sampled_from(CONDITIONS))
    if condition:
        statement["Condition"] = condition
    if with_principal:
        statement["Principal"] = draw(st.sampled_from([
            "*", {"AWS": ACCOUNT}, {"AWS": OTHER}, {"AWS": f"arn:aws:iam::{ACCOUNT}:user/bob"},
            {"Service": "sqs.amazonaws.com"}]))
    return statement


@st.composite
def scenarios(draw):
    caller = draw(st.sampled_from(CALLERS))
    context = {"aws:PrincipalAccount": caller.account, "aws:username": caller.name,
               "aws:SecureTransport": draw(st.booleans())}
    request = Request(caller, draw(st.sampled_from(ACTIONS)), draw(st.sampled_from(RESOURCES)),
                      context)
    identity = draw(st.lists(statements(), max_size=4))
    resource = draw(st.lists(statements(with_principal=True), max_size=4))
    return request, identity, resource


def decide(request, identity, resource):
    identity_policies = [parse_policy(doc(*identity))] if identity else []
    resource_policy = parse_policy(doc(*resource), RESOURCE) if resource else None
    return authorize(request, identity_policies, resource_policy, ACCOUNT)


@settings(max_examples=300, deadline=None)
@given(scenarios(), statements(effect="Deny"), st.booleans())
def test_adding_a_deny_never_allows_what_was_denied(scenario, extra, to_identity):
    request, identity, resource = scenario
    before = decide(request, identity, resource)
    if to_identity:
        after = decide(request, identity + [extra], resource)
    else:
        extra = {**extra, "Principal": "*"}
        after = decide(request, identity, resource + [extra])
    if not before.allowed:
        assert not after.allowed


@settings(max_examples=300, deadline=None)
@given(scenarios(), statements(effect="Allow"))
def test_adding_an_allow_never_denies_what_was_allowed(scenario, extra):
    request, identity, resource = scenario
    if decide(request, identity, resource).allowed:
        assert decide(request, identity + [extra], resource).allowed


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_statement_order_is_irrelevant(scenario, rng):
    request, identity, resource = scenario
    expected = decide(request, identity, resource)
    shuffled_identity, shuffled_resource = list(identity), list(resource)
    rng.shuffle(shuffled_identity)
    rng.shuffle(shuffled_resource)
    assert decide(request, shuffled_identity, shuffled_resource) == expected


def _reference_match(pattern: str, value: str) -> bool:
    """A plain dynamic-programming matcher for * and ?, to compare with."""
    table = [[False] * (len(value) + 1) for _ in range(len(pattern) + 1)]
    table[0][0] = True
    for i, p in enumerate(pattern, 1):
        table[i][0] = table[i - 1][0] and p == "*"
        for j, v in enumerate(value, 1):
            if p == "*":
                table[i][j] = table[i - 1][j] or table[i][j - 1]
            else:
                table[i][j] = table[i - 1][j - 1] and (p == "?" or p == v)
    return table[-1][-1]


ALPHABET = st.text(alphabet="ab.*?+[]()\\^$|{}", max_size=8)


@settings(max_examples=500, deadline=None)
@given(ALPHABET, st.text(alphabet="ab.*?+[]()\\^$|{}", max_size=8))
def test_wildcard_matching_agrees_with_a_reference(pattern, value):
    assert wildcard_match(pattern, value) is _reference_match(pattern, value)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="*?"), max_size=12))
def test_a_pattern_without_wildcards_matches_only_itself(text):
    assert wildcard_match(text, text)
    assert not wildcard_match(text, text + "x")
