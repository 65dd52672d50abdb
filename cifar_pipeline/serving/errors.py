"""Every error the server answers, in the body its route's users expect: the Open Inference
Protocol's `{"error": ...}` on the /v2 routes, FastAPI's `{"detail": ...}` elsewhere; always
one message that says what is wrong, also for a request FastAPI itself refused."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cifar_pipeline.serving.inputs import InputError
from cifar_pipeline.serving.metrics import BodyTooLarge


def error_body(request: Request, message: str) -> dict[str, str]:
    return {"error": message} if request.url.path.startswith("/v2") else {"detail": message}


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of problems as one sentence: `file: Field required`."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
        problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=error_body(request, str(exc)))

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(status_code=413, content=error_body(request, str(exc)))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=error_body(request, validation_message(exc)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # 405 keeps its Allow header (RFC 9110), a 404 of an unknown route its message
        return JSONResponse(
            status_code=exc.status_code, content=error_body(request, str(exc.detail)), headers=exc.headers
        )
