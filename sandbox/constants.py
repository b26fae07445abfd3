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
