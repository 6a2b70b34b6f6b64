"""The Tandem Python SDK: a realtime `Client` and the server-to-server `ServerAPI`.

The wire protocol is the SDK's only contract with the server; it imports no server code.
"""

from client_sdk._client import Client, TokenProvider
from client_sdk._errors import (
    BadRequest,
    ClientClosed,
    Conflict,
    ConnectionLost,
    InsufficientState,
    InternalError,
    InvalidPayload,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestTimeout,
    Shutdown,
    SlowConsumer,
    TandemError,
    TokenExpired,
    Unauthorized,
    Unavailable,
    UnknownChannel,
    UnrecoverablePosition,
    error_class,
    error_from_body,
)
from client_sdk._http import ServerAPI
from client_sdk._job_watch import JobWatch, JobWatcher, ProgressCallback
from client_sdk._job_worker import JobReport, JobsAPI
from client_sdk._jobs import (
    CreatedJob,
    Job,
    JobCancelled,
    JobErrorInfo,
    JobFailed,
    JobStatus,
    JobUnsuccessful,
)
from client_sdk._models import History, Message, Notice, Position, PublishResult, Resync, Token
from client_sdk._subscription import Subscription

__all__ = [
    "BadRequest",
    "Client",
    "ClientClosed",
    "Conflict",
    "ConnectionLost",
    "CreatedJob",
    "History",
    "InsufficientState",
    "InternalError",
    "InvalidPayload",
    "Job",
    "JobCancelled",
    "JobErrorInfo",
    "JobFailed",
    "JobReport",
    "JobStatus",
    "JobUnsuccessful",
    "JobWatch",
    "JobWatcher",
    "JobsAPI",
    "Message",
    "NotFound",
    "Notice",
    "PayloadTooLarge",
    "PermissionDenied",
    "Position",
    "ProgressCallback",
    "PublishResult",
    "RateLimited",
    "RequestTimeout",
    "Resync",
    "ServerAPI",
    "Shutdown",
    "SlowConsumer",
    "Subscription",
    "TandemError",
    "Token",
    "TokenExpired",
    "TokenProvider",
    "Unauthorized",
    "Unavailable",
    "UnknownChannel",
    "UnrecoverablePosition",
    "error_class",
    "error_from_body",
]
