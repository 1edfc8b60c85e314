"""The checks every endpoint's request parser shares: a JSON object body, ``model``, ``stream``, and the Azure
deployment naming the model when the body does not."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BadRequest


def json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return payload


def model_of(payload: dict[str, Any]) -> str | None:
    model = payload.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise BadRequest("'model' must be a non-empty string.", param="model")
    return model


def stream_of(payload: dict[str, Any]) -> bool:
    stream = payload.get("stream")
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", param="stream")
    return stream


def positive_int(payload: dict[str, Any], name: str) -> None:
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise BadRequest(f"'{name}' must be a positive integer.", param=name)


def with_deployment(raw: bytes, payload: dict[str, Any], model: str | None, deployment: str | None
                    ) -> tuple[bytes, str | None]:
    """An Azure-shaped path's deployment names the model when the body does not: (body, model)."""
    if model is None and deployment:
        payload["model"] = deployment
        return orjson.dumps(payload), deployment
    return raw, model


def routing_fields(raw: bytes, deployment: str | None) -> tuple[dict[str, Any], bytes, str | None, bool]:
    """``json_object``, ``model_of``, ``stream_of`` and ``with_deployment`` in one call: (payload, body, model,
    stream). On every chat request's path, where each call shows; the named checks run only to say what is
    wrong."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if type(payload) is not dict:
        payload = json_object(raw)  # (raises the 400 that says what is wrong)
    model = payload.get("model")
    stream = payload.get("stream")
    if not ((model is None or (type(model) is str and model)) and (stream is None or type(stream) is bool)):
        model_of(payload)
        stream_of(payload)
    if model is None and deployment:
        raw, model = with_deployment(raw, payload, model, deployment)
    return payload, raw, model, stream is True
