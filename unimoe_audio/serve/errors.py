"""HTTP errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, `param`
naming the field at fault, so the `openai` client and curl users see what to change."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from unimoe_audio.errors import UniMoEError

TYPES = {400: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """An HTTP error response: status, message and the request field it concerns."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers

    @classmethod
    def from_user_error(cls, err: UniMoEError, param: str | None = None) -> "ApiError":
        return cls(400, str(err), param)

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.status}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def validation_error(err: RequestValidationError) -> ApiError:
    """FastAPI's validation errors: a field this server does not know is one it cannot honour (400);
    a missing or malformed field is 422. The first error names the field."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "form"))
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"unsupported field {field!r}: this model cannot honour it", field)
    return ApiError(422, f"{field}: {first['msg']}", field)


def install(app: FastAPI) -> None:
    """Every ApiError, validation error and UniMoEError becomes a JSON error response."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError):
        return validation_error(err).response()

    @app.exception_handler(UniMoEError)
    async def _user(_: Request, err: UniMoEError):
        return ApiError.from_user_error(err).response()
