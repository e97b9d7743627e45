"""What can go wrong in a request, as Python exceptions the SOAP layer turns into declared faults.

The operations raise these; `facade.service` maps each class to a spyne Fault
of the same name in the definition's namespace, so the logic never depends on
spyne and every fault the WSDL declares has exactly one cause here.
"""
from __future__ import annotations


class FacadeError(Exception):
    """Root of the façade's request errors; `message` is the faultstring a human reads."""

    fault_name = "FacadeFault"
    faultcode = "Server"

    def __init__(self, message: str, detail: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidRequest(FacadeError):
    """A parameter is missing or has a bad value; the message names the field."""

    fault_name = "InvalidRequestFault"
    faultcode = "Client.InvalidRequest"


class TokenValidationFailed(FacadeError):
    """The authentication manager rejected the session token (the reference waiter's fault)."""

    fault_name = "TokenValidationFailedFault"
    faultcode = "Client.TokenValidationFailed"
    FAULTSTRING = "Session-token validation failed"

    def __init__(self, why: str):
        super().__init__(self.FAULTSTRING, {"reason": why})


class WrongProject(FacadeError):
    """The token is valid but belongs to another project than the job's owner."""

    fault_name = "WrongProjectFault"
    faultcode = "Client.WrongProject"


class UnknownServiceID(FacadeError):
    """No job with this serviceID exists (never started, or removed after retention)."""

    fault_name = "UnknownServiceIDFault"
    faultcode = "Client.UnknownServiceID"


class AuthManagerUnavailable(FacadeError):
    """The authentication manager could not be reached or answered nonsense in time."""

    fault_name = "AuthManagerUnavailableFault"
    faultcode = "Server.AuthManagerUnavailable"


class JobFailed(FacadeError):
    """The job ended FAILED or ABORTED and its failure page has already been shown."""

    fault_name = "JobFailedFault"
    faultcode = "Server.JobFailed"


class JobNotActive(FacadeError):
    """The job cannot take this request in its current state (e.g. notify after it ended)."""

    fault_name = "JobNotActiveFault"
    faultcode = "Client.JobNotActive"


class ServiceUnavailable(FacadeError):
    """The spool's storage refuses writes (full, read-only, failing): nothing was recorded; retry later."""

    fault_name = "ServiceUnavailableFault"
    faultcode = "Server.ServiceUnavailable"


class InternalError(FacadeError):
    """A bug or an unreadable spool file; details go to the log, not to the caller."""

    fault_name = "InternalErrorFault"
    faultcode = "Server.InternalError"


ALL_ERRORS: tuple[type[FacadeError], ...] = (
    InvalidRequest, TokenValidationFailed, WrongProject, UnknownServiceID,
    AuthManagerUnavailable, JobFailed, JobNotActive, ServiceUnavailable, InternalError,
)


def declared_for(faultcode: str) -> type[FacadeError]:
    """The error whose declared element a fault raised outside the operations carries in its <detail>.

    Every operation declares InvalidRequestFault and InternalErrorFault, so a
    refusal before any operation runs (the guard, the schema, XML that does
    not parse) names one of them, and typed clients raise a declared type.
    """
    return InvalidRequest if faultcode.startswith("Client") else InternalError
