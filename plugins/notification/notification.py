"""Tells customers about their orders and payments.

For events from order-service and payment-service it composes one line such as
"Order 42 for 600.00: payment failed" and POSTs it as JSON to the manifest's
`webhook_url`; without one it only logs the line.
"""

import json
import re
from typing import Any, List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, http, log
from wit_world.imports.types import (
    Delivery,
    Event,
    HandlerError_Reject,
    HandlerError_Retry,
    NewEvent,
)

SOURCES = ("order-service", "payment-service")

# What happened, by detail-type; other detail-types are spelled out from their name.
OUTCOMES = {
    "OrderCreated": "order received",
    "OrderCancelled": "order cancelled",
    "PaymentSucceeded": "payment succeeded",
    "PaymentFailed": "payment failed",
    "Payment Processed": "payment processed",
}


class WitWorld(wit_world.WitWorld):
    def handle(self, event: Event, delivery: Delivery) -> List[NewEvent]:
        if event.source not in SOURCES:
            return []
        try:
            detail = json.loads(event.detail)
        except ValueError as err:
            raise Err(HandlerError_Reject(f"detail is not valid JSON: {err}"))
        if not isinstance(detail, dict):
            raise Err(HandlerError_Reject("detail must be a JSON object"))

        to = first(detail, "customer_id", "customer", "email")
        message = compose(event, detail)
        url = (config.get("webhook_url") or "").strip()
        if not url:
            log.log(log.Level.INFO, f"to {to if to is not None else 'nobody'}: {message}")
            return []

        body = {"to": to, "message": message, "event_id": event.id, "delivery_id": delivery.id}
        status = post(url, body, delivery.id)
        log.log(log.Level.INFO, f"sent to {to}: {message} (webhook answered {status})")
        return [
            NewEvent(
                source="notification-service",
                detail_type="NotificationSent",
                detail=json.dumps(
                    {"to": to, "message": message, "event_id": event.id, "status": status}
                ),
                resources=[],
                bus=None,
            )
        ]


def first(detail: dict, *keys: str) -> Optional[Any]:
    for key in keys:
        value = detail.get(key)
        if value is not None and value != "":
            return value
    return None


def compose(event: Event, detail: dict) -> str:
    order = first(detail, "order_id", "id")
    subject = f"Order {order}" if order is not None else f"Event {event.id}"
    amount = first(detail, "amount", "total_cost")
    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
        subject += f" for {amount:.2f}"
    outcome = OUTCOMES.get(event.detail_type) or words(event.detail_type)
    return f"{subject}: {outcome}"


def words(detail_type: str) -> str:
    """'OrderShipped' -> 'order shipped'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", detail_type)
    return " ".join(spaced.split()).lower()


def post(url: str, body: dict, delivery_id: str) -> int:
    request = http.Request(
        method="POST",
        url=url,
        headers=[
            ("content-type", "application/json"),
            # Lets the receiver drop a redelivered notification.
            ("idempotency-key", delivery_id),
        ],
        body=json.dumps(body).encode(),
    )
    try:
        response = http.send(request)
    except Err as err:
        failure = err.value
        if isinstance(failure, http.HttpError_Denied):
            raise Err(
                HandlerError_Reject(
                    f"webhook {url} is not allowed: add its host to [http] allowed_hosts "
                    f"in notification.toml ({failure.value})"
                )
            )
        if isinstance(failure, http.HttpError_InvalidRequest):
            raise Err(HandlerError_Reject(f"webhook_url {url!r} is not usable: {failure.value}"))
        kind = "timed out" if isinstance(failure, http.HttpError_Timeout) else "failed"
        raise Err(HandlerError_Retry(f"webhook POST to {url} {kind}: {failure.value}"))
    if not 200 <= response.status < 300:
        raise Err(HandlerError_Retry(f"webhook {url} answered HTTP {response.status}"))
    return response.status
