"""The ``sandbox`` command as a user runs it: real subprocesses, a real
``sandbox serve`` on a free loopback port, its exit codes and outputs; and
the AWS CLI against it when ``aws`` is installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from http_helpers import client, zip_of

APP = """
def handler(event, context):
    print("handling", event)
    if event.get("fail"):
        raise RuntimeError("failed on purpose")
    return {"got": event}
"""


def environ(tmp_path: Path) -> dict[str, str]:
    """No user AWS configuration; the server's default test/test keys."""
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1",
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
               AWS_CONFIG_FILE=str(tmp_path / "no-config"))
    env.pop("AWS_PROFILE", None)
    env.pop("SANDBOX_ENDPOINT_URL", None)
    return env


def sandbox(tmp_path: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], capture_output=True,
                          text=True, timeout=60, env=env or environ(tmp_path), cwd=tmp_path)


class Served:
    def __init__(self, process: subprocess.Popen[str], url: str, state_dir: Path) -> None:
        self.process = process
        self.url = url
        self.state_dir = state_dir


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "app.py").write_text(APP)
    credentials = tmp_path / "credentials"
    credentials.write_text("[bob]\naws_access_key_id = BOB\naws_secret_access_key = bob\n")
    state_dir = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--port", "0", "--state-dir",
         str(state_dir), "--credentials", str(credentials)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ(tmp_path))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving Lambda's API on http://127.0.0.1:" in line, process.stderr.read()
        url = line.split(" on ", 1)[1].split()[0]
        yield Served(process, url, state_dir)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.cli import main

    for args in (["--help"], ["serve", "--help"], ["invoke", "--help"],
                 ["functions", "--help"], ["functions", "create", "--help"],
                 ["functions", "list", "--help"], ["logs", "--help"],
                 ["roles", "create", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 0 and "usage: sandbox" in capsys.readouterr().out, args
    with pytest.raises(SystemExit) as exited:
        main(["functions"])  # a subcommand is required
    assert exited.value.code == 2


def test_a_session_against_a_server(served: Served, tmp_path: Path) -> None:
    url = ["--endpoint-url", served.url]
    created = sandbox(tmp_path, "functions", "create", "app", "--handler", "app.handler",
                      "--code", str(tmp_path / "code"), "--env", "AB=1", "--memory", "256",
                      *url)
    assert created.returncode == 0, created.stderr
    assert "function:app" in created.stdout
    listed = sandbox(tmp_path, "functions", "list", "--output", "json", *url)
    assert [f["FunctionName"] for f in json.loads(listed.stdout)["Functions"]] == ["app"]
    table = sandbox(tmp_path, "functions", "list", *url)
    assert "app.handler" in table.stdout and "256" in table.stdout
    shown = sandbox(tmp_path, "functions", "get", "app", "--output", "json", *url)
    assert json.loads(shown.stdout)["Environment"]["Variables"] == {"AB": "1"}

    ok = sandbox(tmp_path, "invoke", "app", "--payload", '{"x": 1}', "--log-type", "Tail", *url)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"got": {"x": 1}}
    assert "handling {'x': 1}" in ok.stderr and "REPORT RequestId" in ok.stderr
    (tmp_path / "event.json").write_text('{"fail": true}')
    failed = sandbox(tmp_path, "invoke", "app", "--payload", "@event.json", "--output", "json",
                     *url)
    assert failed.returncode == 1
    reply = json.loads(failed.stdout)
    assert reply["FunctionError"] == "Unhandled"
    assert reply["Payload"]["errorMessage"] == "failed on purpose"
    missing = sandbox(tmp_path, "invoke", "nothing", *url)
    assert missing.returncode == 3 and "ResourceNotFoundException" in missing.stderr
    bad = sandbox(tmp_path, "invoke", "app", "--payload", "{oops", *url)
    assert bad.returncode == 2 and "not JSON" in bad.stderr

    # a profile of the credentials file is its own principal: no permission yet
    bob = environ(tmp_path) | {"AWS_ACCESS_KEY_ID": "BOB", "AWS_SECRET_ACCESS_KEY": "bob"}
    denied = sandbox(tmp_path, "invoke", "app", *url, env=bob)
    assert denied.returncode == 3 and "AccessDeniedException" in denied.stderr
    assert "user/bob" in denied.stderr
    wrong = environ(tmp_path) | {"AWS_SECRET_ACCESS_KEY": "wrong"}
    refused = sandbox(tmp_path, "functions", "list", *url, env=wrong)
    assert refused.returncode == 3 and "InvalidSignatureException" in refused.stderr

    logs = sandbox(tmp_path, "logs", "app", "--state-dir", str(served.state_dir))
    assert logs.returncode == 0 and logs.stdout.count("START RequestId") == 2
    assert sandbox(tmp_path, "logs", "nothing", "--state-dir",
                   str(served.state_dir)).returncode == 3

    # an Event invoke is accepted (202) and delivered by the server
    event = sandbox(tmp_path, "invoke", "app", "--payload", '{"queued": 1}',
                    "--invocation-type", "Event", *url)
    assert event.returncode == 0 and event.stdout.strip() == "StatusCode 202", event.stderr
    log = served.state_dir / "logs" / "app.log"
    assert wait_for(lambda: "handling {'queued': 1}" in log.read_text(), timeout=20)
    # reserved concurrency shows in functions get
    client(served.url).put_function_concurrency(FunctionName="app",
                                                ReservedConcurrentExecutions=3)
    shown = sandbox(tmp_path, "functions", "get", "app", "--output", "json", *url)
    assert json.loads(shown.stdout)["ReservedConcurrentExecutions"] == 3
    assert "ReservedConcurrentExecutions" in sandbox(tmp_path, "functions", "get", "app",
                                                     *url).stdout

    if _aws() is not None:
        _aws_cli(served, tmp_path)

    deleted = sandbox(tmp_path, "functions", "delete", "app", *url)
    assert deleted.returncode == 0
    assert sandbox(tmp_path, "functions", "get", "app", *url).returncode == 3

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    assert served.process.stderr is not None
    assert "shutting down" in served.process.stderr.read()


def _aws() -> str | None:
    """The AWS CLI (v1, installed with the test extra), if there is one."""
    beside = os.path.join(os.path.dirname(sys.executable), "aws")
    return beside if os.path.exists(beside) else shutil.which("aws")


def _aws_cli(served: Served, tmp_path: Path) -> None:
    """The AWS CLI, unmodified, against the server."""
    aws = _aws()
    assert aws is not None
    base = [aws, "lambda", "--endpoint-url", served.url, "--output", "json"]
    listed = subprocess.run([*base, "list-functions"], capture_output=True, text=True,
                            timeout=60, env=environ(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert [f["FunctionName"] for f in json.loads(listed.stdout)["Functions"]] == ["app"]
    out = tmp_path / "out.json"
    invoked = subprocess.run(
        [*base, "invoke", "--function-name", "app", "--payload", '{"from": "aws"}', str(out)],
        capture_output=True, text=True, timeout=60, env=environ(tmp_path))
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout)["StatusCode"] == 200
    assert json.loads(out.read_text()) == {"got": {"from": "aws"}}
    missing = subprocess.run([*base, "get-function", "--function-name", "nothing"],
                             capture_output=True, text=True, timeout=60, env=environ(tmp_path))
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr


def test_no_server_is_exit_4(tmp_path: Path) -> None:
    done = sandbox(tmp_path, "functions", "list", "--endpoint-url", "http://127.0.0.1:9")
    assert done.returncode == 4 and "no server answered" in done.stderr


def test_local_commands_share_a_state_dir(tmp_path: Path) -> None:
    (tmp_path / "package.zip").write_bytes(zip_of({"app.py": APP}))
    state = ["--local", "--state-dir", str(tmp_path / "state")]
    created = sandbox(tmp_path, "functions", "create", "zipped", "--handler", "app.handler",
                      "--code", "package.zip", *state)
    assert created.returncode == 0, created.stderr
    invoked = sandbox(tmp_path, "invoke", "zipped", "--payload", '{"y": 2}', *state)
    assert invoked.returncode == 0 and json.loads(invoked.stdout) == {"got": {"y": 2}}
    queued = sandbox(tmp_path, "invoke", "zipped", "--payload", '{"z": 3}',
                     "--invocation-type", "Event", "--output", "json", *state)
    assert queued.returncode == 0 and json.loads(queued.stdout)["StatusCode"] == 202
    logs = sandbox(tmp_path, "logs", "zipped", "--state-dir", str(tmp_path / "state"))
    assert "handling {'z': 3}" in logs.stdout  # delivered before the command ended
    listed = sandbox(tmp_path, "functions", "list", "--output", "json", *state)
    assert [f["FunctionName"] for f in json.loads(listed.stdout)["Functions"]] == ["zipped"]
    role = sandbox(tmp_path, "roles", "create", "worker", "--state-dir",
                   str(tmp_path / "state"), "--output", "json")
    assert json.loads(role.stdout) == {"Arn": "arn:aws:iam::000000000000:role/worker"}
    again = sandbox(tmp_path, "roles", "create", "worker", "--state-dir",
                    str(tmp_path / "state"))
    assert again.returncode == 3 and "already exists" in again.stderr


def test_serve_with_a_template(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "template.yaml").write_text(
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        "      Handler: app.handler\n      CodeUri: .\n      Tracing: Active\n"
        "      ReservedConcurrentExecutions: 4\n"
        "      Events:\n        Jobs:\n          Type: SQS\n"
        "          Properties:\n            Queue: !GetAtt Jobs.Arn\n"
        "  Jobs:\n    Type: AWS::SQS::Queue\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--port", "0", "--no-auth", "--template",
         str(tmp_path / "template.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ(tmp_path))
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split(" on ", 1)[1].split()[0]
        done = sandbox(tmp_path, "invoke", "Fn", "--payload", '{"t": 1}', "--endpoint-url", url)
        assert done.returncode == 0 and json.loads(done.stdout) == {"got": {"t": 1}}
        # the template's queue, mapping and reserved concurrency are in place
        lam = client(url)
        mapping, = lam.list_event_source_mappings(FunctionName="Fn")["EventSourceMappings"]
        assert mapping["EventSourceArn"] == "arn:aws:sqs:us-east-1:000000000000:Jobs"
        assert mapping["State"] == "Enabled"
        assert lam.get_function(FunctionName="Fn")["Concurrency"] == {
            "ReservedConcurrentExecutions": 4}
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert process.stderr is not None
    assert "unsupported properties ignored: Tracing" in process.stderr.read()




def test_logs_follow_prints_new_invocations(tmp_path: Path) -> None:
    log = tmp_path / "state" / "logs" / "fn.log"
    log.parent.mkdir(parents=True)
    log.write_text("START RequestId: one Version: $LATEST\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "logs", "fn", "--follow", "--state-dir",
         str(tmp_path / "state")], stdout=subprocess.PIPE, text=True, env=environ(tmp_path))
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "START RequestId: one Version: $LATEST\n"
        with log.open("a") as file:
            file.write("START RequestId: two Version: $LATEST\n")
        assert process.stdout.readline() == "START RequestId: two Version: $LATEST\n"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
