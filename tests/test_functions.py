"""Function configuration (sandbox/functions.py): every validation rule of
create_function and update_function, and the Lambda-shaped configuration."""

from __future__ import annotations

import pytest

from sandbox.errors import InvalidParameterValueException
from sandbox.functions import FunctionConfig, validate

HANDLER = "def handler(event, context):\n    return 1\n"


@pytest.fixture
def code(tmp_path):
    (tmp_path / "app.py").write_text(HANDLER)
    return tmp_path


def good(code, **overrides):
    args = {"name": "fn", "handler": "app.handler", "code": str(code), "memory_mb": 128,
            "timeout_s": 3, "environment": {"KEY": "v"}, "start": "snapshot"}
    args.update(overrides)
    return args


@pytest.mark.parametrize("overrides, parameter", [
    ({"memory_mb": 64}, "memory_mb"),
    ({"memory_mb": 127}, "memory_mb"),
    ({"memory_mb": 10241}, "memory_mb"),
    ({"memory_mb": 256.0}, "memory_mb"),
    ({"memory_mb": True}, "memory_mb"),
    ({"timeout_s": 0.5}, "timeout_s"),
    ({"timeout_s": 901}, "timeout_s"),
    ({"timeout_s": "3"}, "timeout_s"),
    ({"handler": "nodot"}, "handler"),
    ({"handler": "app."}, "handler"),
    ({"handler": ".handler"}, "handler"),
    ({"handler": "app.handler-x"}, "handler"),
    ({"handler": "a" * 130 + ".handler"}, "handler"),
    ({"name": "bad name"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"name": "bad/name"}, "name"),
    ({"environment": {"AWS_REGION": "eu-west-1"}}, "AWS_REGION"),
    ({"environment": {"_HANDLER": "x.y"}}, "_HANDLER"),
    ({"environment": {"AWS_LAMBDA_FUNCTION_NAME": "x"}}, "AWS_LAMBDA_FUNCTION_NAME"),
    ({"environment": {"1BAD": "x"}}, "environment variable"),
    ({"environment": {"K": "x"}}, "environment variable"),  # Lambda: [a-zA-Z][a-zA-Z0-9_]+
    ({"environment": {"KEY": 1}}, "environment variable KEY"),
    ({"environment": {"BIG": "x" * 5000}}, "environment variables total"),
    ({"start": "bogus"}, "start"),
    ({"start": "warm"}, "start"),
    ({"description": "d" * 257}, "description"),
], ids=lambda v: str(v)[:40])
def test_create_function_rejects(runtime, code, overrides, parameter):
    with pytest.raises(InvalidParameterValueException) as info:
        runtime.create_function(**good(code, **overrides))
    assert parameter in str(info.value)
    assert info.value.code == "InvalidParameterValueException"
    assert info.value.http_status == 400
    assert runtime.list_functions() == []


def test_missing_code_directory(runtime, tmp_path):
    with pytest.raises(InvalidParameterValueException, match="code") as info:
        runtime.create_function(**good(tmp_path / "does-not-exist"))
    assert "does-not-exist" in str(info.value)


def test_code_must_be_a_directory(runtime, code):
    with pytest.raises(InvalidParameterValueException, match="code"):
        runtime.create_function(**good(code / "app.py"))


@pytest.mark.parametrize("overrides", [
    {"memory_mb": 128}, {"memory_mb": 10240}, {"timeout_s": 1}, {"timeout_s": 900},
    {"timeout_s": 2.5}, {"name": "a"}, {"name": "A-b_9" * 12 + "abcd"},
    {"handler": "pkg/mod.fn"}, {"handler": "pkg.sub.mod.fn"}, {"start": "cold"},
    {"environment": None}, {"environment": {}},
])
def test_boundaries_accepted(runtime, code, overrides):
    config = runtime.create_function(**good(code, **overrides))
    assert config["FunctionName"] == overrides.get("name", "fn")


def test_validate_builds_a_frozen_config(code):
    config = validate("fn", "app.handler", code, 256, 5, {"AB": "c"}, "cold", "desc")
    assert isinstance(config, FunctionConfig)
    assert config.code == str(code)
    assert config.timeout_s == 5.0 and isinstance(config.timeout_s, float)
    assert FunctionConfig.from_record(config.to_record()) == config
    with pytest.raises(AttributeError):
        config.memory_mb = 512  # type: ignore[misc]


def test_to_lambda_shape(runtime, code):
    config = runtime.create_function(**good(code, memory_mb=256, timeout_s=7,
                                            description="hello"))
    assert config["FunctionName"] == "fn"
    assert config["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:fn"
    assert config["Runtime"] == "python3.11"
    assert config["Handler"] == "app.handler"
    assert config["MemorySize"] == 256
    assert config["Timeout"] == 7
    assert config["Description"] == "hello"
    assert config["Environment"] == {"Variables": {"KEY": "v"}}
    assert config["Version"] == "$LATEST"
    assert config["State"] == "Active"
    assert config["StartKind"] == "snapshot"
    assert config["CodeUri"] == str(code)
    assert config["RevisionId"] and config["LastModified"]
