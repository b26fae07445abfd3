"""Constants that mirror AWS Lambda, each cited once here.

Sources: the Lambda developer guide's "Lambda quotas" page, the Invoke API
reference and the Python runtime's bootstrap (awslambdaric).
"""

# Function configuration quotas.
MEMORY_MB_MIN = 128
MEMORY_MB_MAX = 10_240
TIMEOUT_S_MIN = 1.0
TIMEOUT_S_MAX = 900.0
DEFAULT_MEMORY_MB = 128
DEFAULT_TIMEOUT_S = 3.0
FUNCTION_NAME_MAX = 64
HANDLER_MAX = 128
ENVIRONMENT_MAX_BYTES = 4096  # all keys and values together

# Invocation payload quotas: 6 MB each way for synchronous invokes.
SYNC_PAYLOAD_MAX = 6 * 1024 * 1024
# Lambda's INIT phase is capped at 10 s for on-demand functions.
INIT_TIMEOUT_S = 10.0
# X-Amz-Log-Result carries the last 4 KB of the invocation's log.
LOG_TAIL_BYTES = 4096

# SHUTDOWN: a graceful signal first, then a kill this long after.
SHUTDOWN_GRACE_S = 2.0

RUNTIME_NAME = "python3.11"
LATEST_VERSION = "$LATEST"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "000000000000"

# Environment variables Lambda sets itself; a function may not set them.
RESERVED_ENVIRONMENT_KEYS = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION",
    "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})

# errorType values of the Python runtime and of the Lambda service.
ERROR_IMPORT_MODULE = "Runtime.ImportModuleError"
ERROR_SYNTAX = "Runtime.UserCodeSyntaxError"
ERROR_HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
ERROR_MALFORMED_HANDLER = "Runtime.MalformedHandlerName"
ERROR_BUILTIN_CONFLICT = "Runtime.BuiltInModuleConflict"
ERROR_MARSHAL = "Runtime.MarshalError"
ERROR_UNMARSHAL = "Runtime.UnmarshalError"
ERROR_EXIT = "Runtime.ExitError"
ERROR_OUT_OF_MEMORY = "Runtime.OutOfMemory"
ERROR_TIMEOUT = "Sandbox.Timedout"
ERROR_RESPONSE_TOO_LARGE = "Function.ResponseSizeTooLarge"
FUNCTION_ERROR_UNHANDLED = "Unhandled"

# Permissions. A function's resource-based policy is at most 20 KB (Lambda
# quotas: "Function resource-based policy").
FUNCTION_POLICY_MAX_BYTES = 20 * 1024
# IAM names of users and roles: 1-64 characters of [\w+=,.@-] (IAM quotas).
IAM_NAME_MAX = 64

# What a function's execution role must allow for Lambda to act for it (the
# managed policies AWSLambdaSQSQueueExecutionRole, AWSLambdaKinesisExecutionRole,
# and the developer guide's "Configuring destinations" permissions).
QUEUE_MAPPING_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
STREAM_MAPPING_ACTIONS = ("kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
                          "kinesis:GetRecords", "kinesis:GetShardIterator",
                          "kinesis:ListShards", "kinesis:SubscribeToShard")
DESTINATION_ACTIONS = {"sqs": "sqs:SendMessage", "sns": "sns:Publish",
                       "lambda": "lambda:InvokeFunction", "events": "events:PutEvents"}
# -- invocation models (asynchronous invoke, event source mappings, concurrency) --
# Invoke API: an Event invoke's payload may be up to 1 MB (raised from 256 KB).
ASYNC_PAYLOAD_MAX = 1024 * 1024
# "Configuring error handling for asynchronous invocation": MaximumRetryAttempts
# 0-2 (default 2), MaximumEventAgeInSeconds 60-21600 (default 6 hours).
ASYNC_RETRY_ATTEMPTS_MIN = 0
ASYNC_RETRY_ATTEMPTS_MAX = 2
ASYNC_RETRY_ATTEMPTS_DEFAULT = 2
ASYNC_EVENT_AGE_MIN_S = 60
ASYNC_EVENT_AGE_MAX_S = 21_600
ASYNC_EVENT_AGE_DEFAULT_S = 21_600
# "How Lambda handles errors and retries with asynchronous invocation": one
# minute before the first retry, two before the second (base x attempt).
ASYNC_RETRY_BASE_DELAY_S = 60.0
# Same page: throttled events return to the queue; the retry interval grows
# exponentially from 1 second to at most 5 minutes. Both scale with the
# Runtime's retry base delay (1 s and 300 s at the default 60 s).
THROTTLE_FIRST_DELAY_FRACTION = 1.0 / 60.0
THROTTLE_MAX_DELAY_FRACTION = 5.0
# Destination record conditions (invocation records of asynchronous invokes).
CONDITION_SUCCESS = "Success"
CONDITION_RETRIES_EXHAUSTED = "RetriesExhausted"
CONDITION_EVENT_AGE_EXCEEDED = "EventAgeExceeded"
CONDITION_ZERO_RESERVED_CONCURRENCY = "ZeroReservedConcurrency"
# Stream event source mappings' on-failure record conditions.
CONDITION_RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
CONDITION_RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
DESTINATION_RECORD_VERSION = "1.0"

# Concurrency ("Lambda function scaling"): reserving concurrency must leave
# at least 100 unreserved executions in the account. A local Runtime's limit
# may be far below 1,000, so the floor here is min(100, limit // 10).
UNRESERVED_CONCURRENCY_MIN = 100
# TooManyRequestsException reasons of the Invoke API.
REASON_ACCOUNT_LIMIT = "ConcurrentInvocationLimitExceeded"
REASON_RESERVED_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"
THROTTLE_MESSAGE = "Rate Exceeded."

# Event source mappings (CreateEventSourceMapping API reference).
BATCH_SIZE_MIN = 1
BATCH_SIZE_MAX = 10_000
QUEUE_BATCH_SIZE_DEFAULT = 10
STREAM_BATCH_SIZE_DEFAULT = 100
# SQS: a batch larger than 10 requires a batching window of at least 1 s.
QUEUE_BATCH_SIZE_WITHOUT_WINDOW_MAX = 10
BATCHING_WINDOW_MAX_S = 300
STREAM_RETRY_ATTEMPTS_MAX = 10_000
STREAM_RECORD_AGE_MIN_S = 60
STREAM_RECORD_AGE_MAX_S = 604_800
PARALLELIZATION_FACTOR_MAX = 10
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST")
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"

# SQS: message bodies up to 1 MiB (raised from 256 KiB); visibility timeout
# 0-12 hours (default 30 s); maxReceiveCount 1-1000; long polls up to 20 s;
# at most 10 messages per ReceiveMessage call.
QUEUE_MESSAGE_MAX = 1024 * 1024
QUEUE_VISIBILITY_TIMEOUT_DEFAULT_S = 30
QUEUE_VISIBILITY_TIMEOUT_MAX_S = 43_200
QUEUE_MAX_RECEIVE_COUNT_MAX = 1000
QUEUE_WAIT_MAX_S = 20
QUEUE_RECEIVE_MAX = 10
QUEUE_NAME_MAX = 80
# SQS MessageRetentionPeriod: 60 s to 14 days, default 4 days.
QUEUE_RETENTION_MIN_S = 60
QUEUE_RETENTION_MAX_S = 1_209_600
QUEUE_RETENTION_DEFAULT_S = 345_600
# Kinesis: a record's data blob is at most 1 MiB; partition keys 1-256 chars.
STREAM_RECORD_MAX = 1024 * 1024
PARTITION_KEY_MAX = 256
STREAM_NAME_MAX = 128
# Kinesis retention period: 24 hours (default) to 365 days.
STREAM_RETENTION_MIN_H = 24
STREAM_RETENTION_MAX_H = 8760
STREAM_RETENTION_DEFAULT_H = 24

# -- interfaces (sandbox/http, sandbox/sam) ----------------------------------------------
# The Lambda API's version path prefix (botocore's service model, lambda/2015-03-31).
API_VERSION = "2015-03-31"
# Deployment package quotas: 50 MB zipped for a direct upload, 250 MB unzipped
# (Lambda quotas: "Deployment package (.zip file archive) size").
ZIP_UPLOAD_MAX = 50 * 1024 * 1024
ZIP_UNZIPPED_MAX = 250 * 1024 * 1024
# No quota is published for the number of files; a bound keeps a zip of empty
# entries from exhausting inodes.
ZIP_ENTRIES_MAX = 20_000
# ClientContext: up to 3,583 bytes of base64-encoded JSON (Invoke API reference).
CLIENT_CONTEXT_MAX = 3583
# SigV4: a request's X-Amz-Date may differ from the server's clock by at most
# 15 minutes ("Signature expired" otherwise; Signature Version 4 reference).
SIGV4_MAX_SKEW_S = 15 * 60
# The LocalStack convention for code used in place: Code.S3Bucket "hot-reload"
# with Code.S3Key naming a local directory.
LOCAL_CODE_BUCKET = "hot-reload"
# HTTP server defaults: loopback only; 9001 is the port of SAM CLI's local Lambda.
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 9001
# The access key and secret that stand for the local account's root, the
# pair LocalStack users already have configured.
DEFAULT_ACCESS_KEY = "test"
DEFAULT_SECRET_KEY = "test"
