"""Errors that leave the API, each with the contract's status and code."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with an HTTP status."""

    status: int = 400
    code: str = "invalid_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(ApiError):
    status = 400
    code = "invalid_request"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class VersionConflict(ApiError):
    status = 409
    code = "version_conflict"


class CatalogueTooLarge(ApiError):
    """A registry write that would take the task catalogue past its budget (core.catalogue)."""

    status = 422
    code = "catalogue_too_large"


class _Retryable(ApiError):
    """A 503: the caller may try again after `retry_after_s` (the Retry-After header)."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RegistryUnavailableError(_Retryable):
    code = "registry_unavailable"


class RequestTooLarge(ApiError):
    status = 413
    code = "request_too_large"


class NoBackendAvailable(_Retryable):
    code = "no_backend_available"
