"""The fields of MLflow's REST requests and its refusals: what every MLflow handler
(tracking, logged models, registry) reads a request and refuses with."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from tether.errors import TetherError

MAX_RESULTS = 50_000
DEFAULT_RESULTS = 1_000


class MlflowError(TetherError):
    """A refusal in MLflow's terms: ``error_code`` as MLflow names it, HTTP ``status``."""

    code = "mlflow"

    def __init__(self, error_code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message, hint=None)
        self.error_code = error_code
        self.status = status


def missing(what: str) -> MlflowError:
    return MlflowError("RESOURCE_DOES_NOT_EXIST", what, status=404)


def invalid(message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", message)


def text(body: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise invalid(f"Missing value for required parameter '{name}'")
        return None
    if not isinstance(value, str | int | float):
        raise invalid(f"Parameter '{name}' must be a string")
    return str(value)


def required(body: Mapping[str, Any], name: str) -> str:
    found = text(body, name)
    assert found is not None  # text refuses a missing required field
    return found


def pairs(body: Mapping[str, Any], name: str) -> dict[str, str]:
    """A list of ``{"key", "value"}`` (tags, params) as a mapping."""
    items = body.get(name) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) and "key" in i for i in items):
        raise invalid(f"Parameter '{name}' must be a list of key/value pairs")
    return {str(i["key"]): str(i.get("value") if i.get("value") is not None else "")
            for i in items}  # fmt: skip


def millis(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def page(body: Mapping[str, Any], *, default: int = DEFAULT_RESULTS) -> tuple[int, int]:
    """(limit, offset) from ``max_results`` and ``page_token``."""
    try:
        limit = int(body.get("max_results") or default)
        given = body.get("page_token")
        offset = int(base64.urlsafe_b64decode(str(given)).decode()) if given else 0
    except (ValueError, TypeError, UnicodeDecodeError):
        raise invalid("Invalid page token or max_results") from None
    if not 0 < limit <= MAX_RESULTS or offset < 0:
        raise invalid(f"max_results must be between 1 and {MAX_RESULTS}")
    return limit, offset


def token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def paged(found: list[Any], limit: int, offset: int) -> tuple[list[Any], dict[str, Any]]:
    """One page of ``found`` (fetched with one item more than ``limit``, to know whether
    another page follows) and the ``next_page_token`` field when one does."""
    if len(found) > limit:
        return found[:limit], {"next_page_token": token(offset + limit)}
    return found, {}
