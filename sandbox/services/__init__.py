"""Built-in services the invocation models use: queues (SQS semantics) and
streams (Kinesis semantics), named by ARNs of one local region and account."""
