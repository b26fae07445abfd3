"""ARNs of the local region and account: building them and reading them back."""

from __future__ import annotations

import dataclasses

from ..errors import InvalidParameterValueException

# What each service's ARNs name here.
NOUNS = {"lambda": "function", "sqs": "queue", "kinesis": "stream"}


@dataclasses.dataclass(frozen=True)
class Arns:
    """The ARN scheme of one Runtime (one region, one account)."""

    region: str
    account_id: str

    def function(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def queue(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account_id}:{name}"

    def stream(self, name: str) -> str:
        return f"arn:aws:kinesis:{self.region}:{self.account_id}:stream/{name}"

    def of(self, service: str, name: str) -> str:
        """The ARN of ``name`` in ``service`` ("lambda", "sqs" or "kinesis")."""
        build = {"lambda": self.function, "sqs": self.queue, "kinesis": self.stream}[service]
        return build(name)

    def name_of(self, given: str, service: str, what: str) -> str:
        """The name in ``given``: a bare name, or a local ARN of ``service``.

        Raises:
            InvalidParameterValueException: an ARN that is not local, or not
                of ``service``.
        """
        if not given.startswith("arn:"):
            return given
        found, name = self.parse(given, what)
        if found != service:
            raise InvalidParameterValueException(
                f"{what} {given!r} is not a {NOUNS[service]} ARN")
        return name

    def parse(self, arn: str, what: str = "ARN") -> tuple[str, str]:
        """``(service, name)`` of a local function, queue or stream ARN, where
        service is "lambda", "sqs" or "kinesis".

        Raises:
            InvalidParameterValueException: not an ARN of this region and
                account, or of another service.
        """
        parts = arn.split(":", 5) if isinstance(arn, str) else []
        if len(parts) != 6 or parts[0] != "arn" or parts[1] != "aws":
            raise InvalidParameterValueException(f"{what} is not an ARN: {arn!r}")
        service, region, account, resource = parts[2], parts[3], parts[4], parts[5]
        if (region, account) != (self.region, self.account_id):
            raise InvalidParameterValueException(
                f"{what} {arn!r} is not in this Runtime's region and account "
                f"({self.region}, {self.account_id})")
        if service == "lambda" and resource.startswith("function:"):
            name = resource[len("function:"):]
            if ":" not in name and name:
                return "lambda", name
        elif service == "sqs" and resource and ":" not in resource:
            return "sqs", resource
        elif service == "kinesis" and resource.startswith("stream/") and len(resource) > 7:
            return "kinesis", resource[len("stream/"):]
        raise InvalidParameterValueException(
            f"{what} {arn!r} names no function, queue or stream this Runtime provides "
            "(arn:aws:lambda:…:function:NAME, arn:aws:sqs:…:NAME, "
            "arn:aws:kinesis:…:stream/NAME)")
