"""Dependencies as ``Annotated`` aliases: settings, job store, queue, metrics and the API key check.

The objects are built once per app (``create_app``) and kept in ``app.state``; tests swap them with
``app.dependency_overrides``.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jobs.queue import JobQueue
from jobs.store import JobStore
from service.api.errors import ApiError
from service.api.telemetry import GatewayMetrics
from service.settings import GatewaySettings, hash_api_key


def get_app_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


def get_metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[GatewaySettings, Depends(get_app_settings)]
JobStoreDep = Annotated[JobStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]

_bearer = HTTPBearer(auto_error=False, description="An itvsam API key (`itvsam apikey` makes one).")


def require_api_key(settings: SettingsDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """Accept a request whose bearer key hashes to one of ``settings.api_key_hashes``; 401 without a key, 403 with a
    key that is not accepted. Returns the first 8 hex digits of the key's hash (for logs)."""
    if credentials is None:
        raise ApiError(401, "unauthenticated", "a bearer API key is required (header 'Authorization: Bearer KEY')",
                       headers={"WWW-Authenticate": "Bearer"})
    digest = hash_api_key(credentials.credentials)
    if not any(hmac.compare_digest(digest, accepted) for accepted in settings.api_key_hashes):
        raise ApiError(403, "forbidden", "the API key is not accepted")
    return digest[:8]


def require_api_key_unless_open(request: Request, settings: SettingsDep) -> None:
    """Health and metrics: open when ``settings.open_health``, else as every other endpoint."""
    if not settings.open_health:
        authorization = request.headers.get("authorization", "")
        scheme, _, key = authorization.partition(" ")
        credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=key) \
            if scheme.lower() == "bearer" and key else None
        require_api_key(settings, credentials)


ApiKeyDep = Annotated[str, Depends(require_api_key)]
