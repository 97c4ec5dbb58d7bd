"""One trace from a REST request through Envoy and the server into the Kafka event it caused, and on
through a consumer into the events the consumer emits (W3C traceparent, CloudEvents distributed-tracing
extension)."""

from __future__ import annotations

import secrets
import uuid

from scripts.devtokens import mint
from server.core.events.cloudevents import LIBRARY_EVENTS_TOPIC, PAYMENT_EVENTS_TOPIC, make_cloud_event
from server.core.tracing import parse_traceparent
from server.library.rules import ITEM_ADDED, WISHLIST_ITEM_ADDED
from tests.support.kafka import TopicReader, about, publish
from tests.support.rest import ENVOY


def _traceparent() -> tuple[str, str, str]:
    """(traceparent, trace id, span id) of a fresh sampled trace, as a browser or app would send it."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def _add_to_wishlist(http, user: uuid.UUID, headers: dict[str, str]) -> None:
    async with http.post(
        f"{ENVOY}/api/v1/library/me/wishlist",
        json={"productId": str(uuid.uuid4())},
        headers={"Authorization": f"Bearer {mint(str(user))}", **headers},
    ) as response:
        assert response.status == 200, await response.text()


async def test_one_trace_runs_from_a_rest_request_through_envoy_to_the_kafka_event(http, settings):
    user = uuid.uuid4()
    traceparent, trace_id, client_span = _traceparent()
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await _add_to_wishlist(http, user, {"traceparent": traceparent})
        [event] = await reader.wait_for(about(user, WISHLIST_ITEM_ADDED))
    context = parse_traceparent(event["traceparent"])
    assert context is not None, event["traceparent"]
    assert f"{context.trace_id:032x}" == trace_id
    assert f"{context.span_id:016x}" != client_span  # the server's span, a descendant of the client's
    # (Whether it is recorded is the edge's sampling decision, OTEL_TRACES_SAMPLER_ARG, not the client's.)


async def test_envoy_starts_a_trace_when_the_client_sends_none(http, settings):
    users = [uuid.uuid4(), uuid.uuid4()]
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        for user in users:
            await _add_to_wishlist(http, user, {})
        events = [(await reader.wait_for(about(user, WISHLIST_ITEM_ADDED)))[0] for user in users]
    contexts = [parse_traceparent(event["traceparent"]) for event in events]
    assert all(contexts), [event.get("traceparent") for event in events]
    assert contexts[0].trace_id != contexts[1].trace_id  # one trace per request


async def test_a_consumer_continues_the_trace_of_the_event_it_handles(grpc_target, settings):
    user, game = uuid.uuid4(), uuid.uuid4()
    traceparent, trace_id, _ = _traceparent()
    payment = make_cloud_event(
        event_type="com.platform.payment.transaction.completed.v1",
        source="/payment-service",
        subject=str(user),
        data={
            "userId": str(user),
            "orderId": str(uuid.uuid4()),
            "items": [{"productId": str(game), "productType": "game"}],
            "timestamp": "2026-11-20T10:00:00Z",
        },
        traceparent=traceparent,
    )
    async with TopicReader(settings.kafka_bootstrap_servers, LIBRARY_EVENTS_TOPIC) as reader:
        await publish(settings.kafka_bootstrap_servers, PAYMENT_EVENTS_TOPIC, [payment], key=str(user))
        [added] = await reader.wait_for(about(user, ITEM_ADDED), timeout=30)
    context = parse_traceparent(added["traceparent"])
    assert context is not None and f"{context.trace_id:032x}" == trace_id
