"""deft's statuses as exceptions. Every exception carries the status
(.status, its C value), what deft_status_str() says of it (.hint) and the
detail from deft_last_error() (.detail, also the message)."""
from . import _lib

OK = 0
INVALID_ARG = 1
INVALID_USAGE = 2
NOMEM = 3
IO = 4
FORMAT = 5
COMM = 6
UNSUPPORTED = 7
DIVERGED = 8
INTERNAL = 9


class DeftError(Exception):
    """Base of every error deft raises."""
    status = INTERNAL

    def __init__(self, detail, status=None):
        if status is not None:
            self.status = status
        self.detail = detail
        self.hint = _lib.lib.deft_status_str(self.status).decode()
        super().__init__(detail or self.hint)


class InvalidArgument(DeftError, ValueError):
    """A bad argument (DEFT_ERR_INVALID_ARG); the message names it."""
    status = INVALID_ARG


class UsageError(DeftError, RuntimeError):
    """Calls in the wrong order (DEFT_ERR_INVALID_USAGE)."""
    status = INVALID_USAGE


class OutOfMemory(DeftError, MemoryError):
    status = NOMEM


class DeftIOError(DeftError, OSError):
    """A file could not be opened, read or written (DEFT_ERR_IO)."""
    status = IO


class FormatError(DeftError, ValueError):
    """A file's or a state's contents are malformed or do not fit
    (DEFT_ERR_FORMAT)."""
    status = FORMAT


class CommError(DeftError, ConnectionError):
    """A collective failed or a peer went away (DEFT_ERR_COMM)."""
    status = COMM


class Unsupported(DeftError, NotImplementedError):
    status = UNSUPPORTED


class Diverged(DeftError, ArithmeticError):
    """NaN or Inf appeared (DEFT_ERR_DIVERGED). .step is the step that
    diverged (counted from 0), when known."""
    status = DIVERGED

    def __init__(self, detail, status=None, step=None):
        super().__init__(detail, status)
        self.step = step


class InternalError(DeftError, RuntimeError):
    status = INTERNAL


_BY_STATUS = {c.status: c for c in (InvalidArgument, UsageError, OutOfMemory,
                                    DeftIOError, FormatError, CommError,
                                    Unsupported, Diverged, InternalError)}


def error_for(status, detail=None, **extra):
    """The exception for a C status, with deft_last_error() as its detail
    unless one is given."""
    if detail is None:
        detail = _lib.last_error()
    return _BY_STATUS.get(status, DeftError)(detail, status, **extra)


def check(status, **extra):
    """Raises the matching exception unless status is DEFT_OK."""
    if status != OK:
        raise error_for(status, **extra)
