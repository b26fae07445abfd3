"""SAM templates: CloudFormation tags, Globals, intrinsics, roles and
functions defined in a real Runtime, and warnings naming what is not applied."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import pytest

from sandbox import Runtime
from sandbox.errors import InvalidParameterValueException
from sandbox.sam import TemplateWarning, apply_template, read_template
from sandbox.sam.template import merge_globals

APP = """
import os

def handler(event, context):
    return {"greeting": os.environ.get("GREETING"), "stage": os.environ.get("STAGE"),
            "queue": os.environ.get("QUEUE_ARN"), "memory": context.memory_limit_in_mb,
            "timeout": round(context.get_remaining_time_in_millis() / 1000)}
"""

TEMPLATE = """
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
  Memory:
    Type: Number
    Default: 256
Globals:
  Function:
    Runtime: python3.11
    Timeout: 7
    Environment:
      Variables:
        GREETING: hello
Resources:
  Orders:
    Type: AWS::SQS::Queue
  WorkerRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: '2012-10-17'
        Statement:
          - Effect: Allow
            Principal: {Service: lambda.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: invoke
          PolicyDocument:
            Version: '2012-10-17'
            Statement:
              - Effect: Allow
                Action: lambda:InvokeFunction
                Resource: !GetAtt Hello.Arn
              # Its OnFailure destination: Lambda sends as the role.
              - Effect: Allow
                Action: sqs:SendMessage
                Resource: !GetAtt Orders.Arn
  Hello:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "hello-${Stage}"
      Handler: app.handler
      CodeUri: src/
      MemorySize: !Ref Memory
      Tracing: Active
      Environment:
        Variables:
          STAGE: !Ref Stage
          QUEUE_ARN: !GetAtt Orders.Arn
      Events:
        FromQueue:
          Type: SQS
          Properties:
            Queue: !GetAtt Orders.Arn
            BatchSize: 10
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      Handler: index.handler
      Role: !GetAtt WorkerRole.Arn
      ReservedConcurrentExecutions: 2
      EventInvokeConfig:
        MaximumRetryAttempts: 1
        MaximumEventAgeInSeconds: 600
        DestinationConfig:
          OnFailure:
            Type: SQS
            Destination: !GetAtt Orders.Arn
      Timeout: 2
      InlineCode: |
        def handler(event, context):
            return {"inline": True}
  Implicit:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      CodeUri: ./src
      Policies:
        - Statement:
            - Effect: Allow
              Action: lambda:InvokeFunction
              Resource: "*"
        - AWSLambdaBasicExecutionRole
"""


@pytest.fixture
def template(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(APP)
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


def test_read_template_turns_short_tags_into_long_forms(template: Path) -> None:
    document = read_template(template)
    hello = document["Resources"]["Hello"]["Properties"]
    assert hello["FunctionName"] == {"Fn::Sub": "hello-${Stage}"}
    assert hello["MemorySize"] == {"Ref": "Memory"}
    assert hello["Environment"]["Variables"]["QUEUE_ARN"] == {"Fn::GetAtt": ["Orders", "Arn"]}


def test_from_template_defines_functions_and_roles(template: Path) -> None:
    with pytest.warns(TemplateWarning) as caught:
        rt = Runtime.from_template(template, idle_timeout_s=60)
    try:
        names = {f["FunctionName"]: f for f in rt.list_functions()}
        assert set(names) == {"hello-dev", "Worker", "Implicit"}
        hello = names["hello-dev"]
        assert (hello["MemorySize"], hello["Timeout"]) == (256, 7.0)  # parameter, Globals
        assert hello["Role"] == "arn:aws:iam::000000000000:role/HelloRole"
        assert rt.invoke("hello-dev", {}).payload == {
            "greeting": "hello", "stage": "dev", "memory": "256", "timeout": 7,
            "queue": "arn:aws:sqs:us-east-1:000000000000:Orders"}
        assert rt.invoke("Worker", {}).payload == {"inline": True}
        assert names["Worker"]["Role"] == "arn:aws:iam::000000000000:role/WorkerRole"
        role = rt._authorizer.registry.role("arn:aws:iam::000000000000:role/WorkerRole")
        assert role.policies[0].document["Statement"][0]["Resource"] == (
            "arn:aws:lambda:us-east-1:000000000000:function:hello-dev")
        implicit = rt._authorizer.registry.role("arn:aws:iam::000000000000:role/ImplicitRole")
        assert len(implicit.policies) == 1
        # the invocation model: the queue, its mapping, Worker's settings
        queue = "arn:aws:sqs:us-east-1:000000000000:Orders"
        assert rt.list_queues() == [queue]
        mapping, = rt.list_event_source_mappings()
        assert (mapping["FunctionArn"], mapping["EventSourceArn"], mapping["BatchSize"],
                mapping["State"]) == (hello["FunctionArn"], queue, 10, "Enabled")
        assert rt.get_function_concurrency("Worker") == {"ReservedConcurrentExecutions": 2}
        config = rt.get_function_event_invoke_config("Worker")
        assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (1, 600)
        assert config["DestinationConfig"]["OnFailure"] == {"Destination": queue}
        # SAM's implicit role of Hello may poll its queue
        hello_role = rt._authorizer.registry.role(hello["Role"])
        assert hello_role.policies[0].document["Statement"] == [{
            "Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                          "sqs:GetQueueAttributes"], "Resource": queue}]
    finally:
        rt.close()
    messages = [str(w.message) for w in caught]
    assert messages == [
        "function Hello: unsupported properties ignored: Tracing",
        "function Implicit: policy 'AWSLambdaBasicExecutionRole' is not supported (managed "
        "policies and SAM policy templates are not); give a policy document"]


def test_parameters_override_defaults_and_applying_twice_updates(template: Path) -> None:
    with Runtime() as rt, pytest.warns(TemplateWarning):
        result = apply_template(rt, template, {"Stage": "prod", "Memory": "512"})
        assert result.functions["Hello"] == "hello-prod"
        assert rt.get_function("hello-prod")["MemorySize"] == 512
        apply_template(rt, template, {"Stage": "prod", "Memory": "1024"})
        assert rt.get_function("hello-prod")["MemorySize"] == 1024
        assert len(rt.list_functions()) == 3
        assert len(rt.list_event_source_mappings()) == 1  # updated, not made twice


def test_globals_follow_sam_rules() -> None:
    merged = merge_globals(
        {"Timeout": 3, "Environment": {"Variables": {"A": "1", "B": "1"}}, "Layers": ["x"]},
        {"Timeout": 9, "Environment": {"Variables": {"B": "2"}}, "Layers": ["y"]})
    assert merged == {"Timeout": 9, "Environment": {"Variables": {"A": "1", "B": "2"}},
                      "Layers": ["x", "y"]}


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("body, problem", [
    ("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      Handler: app.handler\n      CodeUri: missing/\n", "CodeUri 'missing/' is not a dir"),
    ("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      Handler: app.handler\n      CodeUri: s3://bucket/key.zip\n", "local directory"),
    ("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      Handler: app.handler\n      Runtime: nodejs20.x\n", "python3.x"),
    ("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      Handler: !Bogus app.handler\n", "unknown CloudFormation tag !Bogus"),
    ("Parameters:\n  P:\n    Type: String\nResources: {}\n", "parameter P has no Default"),
    ("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      Handler: !Ref Nowhere\n", "unknown name 'Nowhere'"),
    ("just: text\n", "Resources section"),
])
def test_template_errors_name_the_problem(tmp_path: Path, body: str, problem: str) -> None:
    with Runtime() as rt, pytest.raises(InvalidParameterValueException, match=problem):
        apply_template(rt, write(tmp_path, body))


def test_a_json_template_works_too(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def handler(e, c):\n    return 1\n")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"Resources": {"F": {
        "Type": "AWS::Serverless::Function",
        "Properties": {"Handler": "app.handler", "CodeUri": ".",
                       "FunctionName": {"Fn::Join": ["-", ["a", {"Ref": "AWS::Region"}]]}}}}}))
    with Runtime() as rt:
        apply_template(rt, path)
        assert rt.invoke("a-us-east-1", {}).payload == 1


def test_unsupported_resources_and_sections_warn(tmp_path: Path) -> None:
    body = ("Outputs: {}\nConditions:\n  C: !Equals [a, a]\nResources:\n"
            "  Table:\n    Type: AWS::DynamoDB::Table\n")
    with Runtime() as rt, pytest.warns(TemplateWarning) as caught:
        result = apply_template(rt, write(tmp_path, body))
    assert result.warnings == [
        "template section Conditions is not supported and was ignored",
        "resource Table of type AWS::DynamoDB::Table is not supported and was ignored"]
    assert len(caught) == 2


def test_serve_template_reaches_boto3(template: Path) -> None:
    from http_helpers import client, serve

    with pytest.warns(TemplateWarning):
        rt = Runtime.from_template(template)
    server = serve(rt)
    try:
        reply = client(server.url).invoke(FunctionName="Worker")
        assert json.loads(reply["Payload"].read()) == {"inline": True}
    finally:
        server.stop()
        rt.close()




def test_asynchronous_properties_become_lambda_requests(template: Path) -> None:
    queue = "arn:aws:sqs:us-east-1:000000000000:Orders"
    with Runtime() as rt, pytest.warns(TemplateWarning):
        result = apply_template(rt, template)
    assert sorted(result.requests, key=lambda r: r[0]) == [
        ("CreateEventSourceMapping", {"FunctionName": "hello-dev", "EventSourceArn": queue,
                                      "BatchSize": 10}),
        ("PutFunctionConcurrency", {"FunctionName": "Worker",
                                    "ReservedConcurrentExecutions": 2}),
        ("PutFunctionEventInvokeConfig", {
            "FunctionName": "Worker", "MaximumRetryAttempts": 1,
            "MaximumEventAgeInSeconds": 600,
            "DestinationConfig": {"OnFailure": {"Destination": queue}}}),
    ]


def test_event_translation_warns_about_what_it_drops() -> None:
    from sandbox.sam.events import event_requests

    requests, warnings = event_requests("F", "f", {
        "Api": {"Type": "Api", "Properties": {"Path": "/"}},
        "NoQueue": {"Type": "SQS", "Properties": {}},
        "NoPosition": {"Type": "Kinesis", "Properties": {"Stream": "arn:s"}},
        "Stream": {"Type": "Kinesis", "Properties": {
            "Stream": "arn:s", "StartingPosition": "LATEST", "BisectBatchOnFunctionError": True,
            "Odd": 1}}})
    assert requests == [("CreateEventSourceMapping", {
        "FunctionName": "f", "EventSourceArn": "arn:s", "StartingPosition": "LATEST",
        "BisectBatchOnFunctionError": True})]
    assert warnings == [
        "function F: event Api of type Api is not supported (only SQS and Kinesis) and was "
        "ignored",
        "function F: event NoQueue needs Queue (an ARN) and was ignored",
        "function F: event NoPosition needs StartingPosition (Kinesis) and was ignored",
        "function F: event Stream: unsupported properties ignored: Odd"]


RECORDER = """
import json, os

def handler(event, context):
    for record in event["Records"]:
        body = record.get("body") or record.get("kinesis", {}).get("data")
        name = f"{record['eventSource']}-{len(os.listdir(os.environ['OUT']))}"
        with open(os.path.join(os.environ["OUT"], name), "w") as file:
            file.write(body)
"""

EVENTS_TEMPLATE = """
Resources:
  Dead:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: jobs-dead
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: jobs
      VisibilityTimeout: 20
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Dead.Arn
        maxReceiveCount: 3
      DelaySeconds: 5
  Clicks:
    Type: AWS::Kinesis::Stream
    Properties:
      ShardCount: 2
  Recorder:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src/
      Environment:
        Variables:
          OUT: OUT_DIR
      Events:
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 5
            ScalingConfig:
              MaximumConcurrency: 2
        Clicks:
          Type: Kinesis
          Properties:
            Stream: !GetAtt Clicks.Arn
            StartingPosition: TRIM_HORIZON
"""


def test_template_events_reach_the_function(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(RECORDER)
    path = write(tmp_path, EVENTS_TEMPLATE.replace("OUT_DIR", str(out)))
    with pytest.warns(TemplateWarning) as caught:
        rt = Runtime.from_template(path, isolation=False, idle_timeout_s=60)
    try:
        queue = rt.get_queue("jobs")
        assert (queue["max_receive_count"], queue["visibility_timeout_s"]) == (3, 20)
        rt.send_message("jobs", "hello from the queue")
        rt.put_record("Clicks", b"a click", "user-1")
        assert rt.drain(30)
        bodies = sorted(p.read_text() for p in out.iterdir())
        assert bodies == [base64.b64encode(b"a click").decode(), "hello from the queue"]
    finally:
        rt.close()
    assert sorted(str(w.message) for w in caught) == [
        "function Recorder: event source arn:aws:sqs:us-east-1:000000000000:jobs: "
        "unsupported properties ignored: ScalingConfig",
        "resource Jobs: property DelaySeconds is not supported and was ignored"]
