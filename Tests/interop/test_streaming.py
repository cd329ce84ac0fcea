"""grpcio streaming clients of all four kinds against our Swift server.

Why: the gRPC layer now carries server-, client- and bidirectional streaming calls; grpcio, the
reference implementation, must see them behave as gRPC says. These tests drive
`interop.streams.StreamTest` (Benchmarks/Protos/interop_streams.proto) and OrderService.WatchOrder:
many messages each way, errors after some messages, Trailers-Only errors, half-close, a server
ending a call while the client still sends, early cancellation and deadlines mid-stream (and that
the server's handler noticed: `Stats` reports how each tagged handler ended), response headers
before the first message, the per-message size limit and the concurrent-stream limit.
"""
import itertools
import queue
import threading
import time
import uuid

import grpc
import pytest

from conftest import interop_streams_pb2 as spb, interop_streams_pb2_grpc as spb_grpc
from conftest import order_service_pb2 as opb, order_service_pb2_grpc as opb_grpc
from conftest import reflection_pb2 as rpb, reflection_pb2_grpc as rpb_grpc

TIMEOUT = 20


@pytest.fixture
def streams(channel):
    return spb_grpc.StreamTestStub(channel)


def new_tag():
    return f"t-{uuid.uuid4().hex[:12]}"


def items(n, payload=b"", start=0):
    for i in range(start, start + n):
        yield spb.Item(sequence=i, payload=payload)


def wait_handler_end(stub, tag, timeout=5.0):
    """Polls Stats until the handler of the call tagged `tag` has ended; returns its record."""
    deadline = time.monotonic() + timeout
    while True:
        stats = stub.Stats(spb.StatsRequest(tag=tag), timeout=TIMEOUT)
        assert stats.tag_seen, f"no handler ever ran for {tag}"
        if not stats.tag_running:
            return stats
        assert time.monotonic() < deadline, f"the handler of {tag} still runs: {stats}"
        time.sleep(0.02)


def wait_handler_started(stub, tag, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        stats = stub.Stats(spb.StatsRequest(tag=tag), timeout=TIMEOUT)
        if stats.tag_seen:
            return stats
        assert time.monotonic() < deadline, f"no handler started for {tag}"
        time.sleep(0.02)


def assert_healthy(stub):
    assert stub.Echo(spb.Item(sequence=7, payload=b"ok"), timeout=TIMEOUT) == spb.Item(sequence=7, payload=b"ok")


class Feeder:
    """A request iterator fed from the test (send/close), for ping-pong and endless streams."""

    _END = object()

    def __init__(self):
        self.queue = queue.Queue()
        self.taken = 0

    def send(self, item):
        self.queue.put(item)

    def close(self):
        self.queue.put(self._END)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is self._END:
            raise StopIteration
        self.taken += 1
        return item


def endless(stop: threading.Event, payload=b"", pause=0.0):
    """Items until `stop` is set (a client that keeps sending)."""
    for i in itertools.count():
        if stop.is_set():
            return
        if pause:
            time.sleep(pause)
        yield spb.Item(sequence=i, payload=payload)


# ---------------------------------------------------------------- many messages each way

def test_unary_echo(streams):
    assert streams.Echo(spb.Item(sequence=1, payload=b"\x00\xff"), timeout=TIMEOUT).payload == b"\x00\xff"


def test_server_streaming_many_messages(streams):
    call = streams.Count(spb.CountRequest(count=10_000, payload_bytes=16), timeout=TIMEOUT)
    received = [item.sequence for item in call]
    assert received == list(range(10_000))
    assert call.code() == grpc.StatusCode.OK


def test_server_streaming_payloads_intact(streams):
    replies = list(streams.Count(spb.CountRequest(count=20, payload_bytes=100_000), timeout=TIMEOUT))
    assert [r.sequence for r in replies] == list(range(20))
    assert all(r.payload == b"x" * 100_000 for r in replies)


def test_server_streaming_zero_messages(streams):
    call = streams.Count(spb.CountRequest(count=0), timeout=TIMEOUT)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_client_streaming_many_messages(streams):
    total = streams.Sum(items(10_000, payload=b"abc"), timeout=TIMEOUT)
    assert total.count == 10_000
    assert total.payload_bytes == 30_000
    assert total.sequence_sum == sum(range(10_000))


def test_client_streaming_no_messages(streams):
    assert streams.Sum(iter(()), timeout=TIMEOUT) == spb.Total()


def test_client_streaming_answer_follows_half_close(streams):
    # The handler answers only once it sees the end of the requests: the response cannot arrive
    # before the client half-closes, and it counts everything sent before.
    feeder = Feeder()
    future = streams.Sum.future(feeder, timeout=TIMEOUT)
    for i in range(5):
        feeder.send(spb.Item(sequence=i))
    time.sleep(0.2)
    assert not future.done(), "the server answered before the client half-closed"
    feeder.send(spb.Item(sequence=100))
    feeder.close()
    total = future.result(timeout=TIMEOUT)
    assert (total.count, total.sequence_sum) == (6, 110)


def test_bidi_many_messages(streams):
    call = streams.Chat(items(10_000, payload=b"p" * 10), timeout=TIMEOUT)
    received = [(item.sequence, item.payload) for item in call]
    assert received == [(i, b"p" * 10) for i in range(10_000)]
    assert call.code() == grpc.StatusCode.OK


def test_bidi_ping_pong(streams):
    # Each echo arrives before the next request is sent: messages flow both ways mid-call.
    feeder = Feeder()
    call = streams.Chat(feeder, timeout=TIMEOUT)
    for i in range(100):
        feeder.send(spb.Item(sequence=i, payload=str(i).encode()))
        reply = next(call)
        assert (reply.sequence, reply.payload) == (i, str(i).encode())
    feeder.close()
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_bidi_large_messages_both_ways(streams):
    payload = bytes(range(256)) * 4096  # 1 MiB
    call = streams.Chat(items(16, payload=payload), timeout=TIMEOUT)
    received = list(call)
    assert [r.sequence for r in received] == list(range(16))
    assert all(r.payload == payload for r in received)


# ---------------------------------------------------------------- errors after some messages

def test_server_streaming_error_after_messages(streams):
    call = streams.Count(spb.CountRequest(count=10, payload_bytes=8, fail_after=3, fail_code=9,
                                          fail_message="stopped after 3 ✓"), timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for item in call:
            received.append(item.sequence)
    assert received == [0, 1, 2]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "stopped after 3 ✓"


def test_server_streaming_error_after_all_messages(streams):
    call = streams.Count(spb.CountRequest(count=4, fail_after=4, fail_code=10, fail_message="late"), timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for item in call:
            received.append(item.sequence)
    assert received == [0, 1, 2, 3]
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.ABORTED, "late")


def test_server_streaming_error_before_first_message(streams):
    call = streams.Count(spb.CountRequest(count=10, fail_after=0, fail_code=5, fail_message="none"), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.NOT_FOUND, "none")


@pytest.mark.parametrize("request_fields", [dict(count=-1), dict(count=1_000_001), dict(payload_bytes=-1),
                                            dict(payload_bytes=4 * 1024 * 1024 + 1), dict(delay_ms=-5)])
def test_server_streaming_invalid_argument(streams, request_fields):
    with pytest.raises(grpc.RpcError) as info:
        list(streams.Count(spb.CountRequest(**request_fields), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_streaming_error_after_messages(streams):
    tag = new_tag()
    with pytest.raises(grpc.RpcError) as info:
        streams.Sum(items(100), timeout=TIMEOUT,
                    metadata=[("x-fail-after", "3"), ("x-fail-code", "11"), ("x-fail-message", "too far"), ("x-tag", tag)])
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.OUT_OF_RANGE, "too far")
    stats = wait_handler_end(streams, tag)
    assert stats.tag_received == 3 and stats.tag_outcome == "OUT_OF_RANGE"
    assert_healthy(streams)


def test_bidi_error_after_messages(streams):
    call = streams.Chat(items(100), timeout=TIMEOUT,
                        metadata=[("x-fail-after", "5"), ("x-fail-code", "10"), ("x-fail-message", "enough")])
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for item in call:
            received.append(item.sequence)
    assert received == [0, 1, 2, 3, 4]
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.ABORTED, "enough")
    assert_healthy(streams)


def test_error_trailers_carry_metadata(streams):
    call = streams.Count(spb.CountRequest(count=5, fail_after=2, fail_code=3, fail_message="bad"), timeout=TIMEOUT,
                         metadata=[("x-echo-note", "kept")])
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("x-echo-note", "kept") in [(m.key, m.value) for m in call.trailing_metadata()]


# ---------------------------------------------------------------- the server ends first

def test_server_ends_bidi_early_while_client_sends(streams):
    stop = threading.Event()
    tag = new_tag()
    try:
        call = streams.Chat(endless(stop, payload=b"z" * 100, pause=0.001), timeout=TIMEOUT,
                            metadata=[("x-end-after", "5"), ("x-tag", tag)])
        received = [item.sequence for item in call]
        assert received == [0, 1, 2, 3, 4]
        assert call.code() == grpc.StatusCode.OK
    finally:
        stop.set()
    stats = wait_handler_end(streams, tag)
    assert stats.tag_outcome == "OK" and stats.tag_sent == 5
    assert_healthy(streams)


def test_client_streaming_failure_while_client_sends_much_more(streams):
    # The handler fails after one message while the client has megabytes still to send: the
    # client must get the status at once, not wait on a window the server never reopens.
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        streams.Sum(items(200, payload=b"q" * 65_536), timeout=TIMEOUT,
                    metadata=[("x-fail-after", "1"), ("x-fail-code", "9")])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert time.monotonic() - started < 5
    assert_healthy(streams)


# ---------------------------------------------------------------- cancellation and deadlines

@pytest.mark.parametrize("delay_ms", [0, 5])
def test_cancel_server_stream_mid_stream(streams, delay_ms):
    # delay 0: the handler is held by flow control in write; delay 5: it sleeps between writes.
    tag = new_tag()
    call = streams.Count(spb.CountRequest(count=1_000_000, payload_bytes=1000, delay_ms=delay_ms), timeout=TIMEOUT,
                         metadata=[("x-tag", tag)])
    for _, item in zip(range(50), call):
        pass
    assert item.sequence == 49
    call.cancel()
    assert call.code() == grpc.StatusCode.CANCELLED
    stats = wait_handler_end(streams, tag)
    assert stats.tag_outcome == "CANCELLED"
    assert stats.tag_sent < 1_000_000
    assert_healthy(streams)


def test_cancel_client_stream_mid_stream(streams):
    stop = threading.Event()
    tag = new_tag()
    try:
        future = streams.Sum.future(endless(stop, payload=b"c" * 1000, pause=0.001), timeout=TIMEOUT,
                                    metadata=[("x-tag", tag)])
        deadline = time.monotonic() + 5
        while streams.Stats(spb.StatsRequest(tag=tag), timeout=TIMEOUT).tag_received < 20:
            assert time.monotonic() < deadline, "the handler received nothing"
            time.sleep(0.01)
        assert future.cancel()
    finally:
        stop.set()
    stats = wait_handler_end(streams, tag)
    assert stats.tag_outcome == "CANCELLED"
    assert_healthy(streams)


def test_cancel_bidi_mid_stream(streams):
    stop = threading.Event()
    tag = new_tag()
    try:
        call = streams.Chat(endless(stop, pause=0.001), timeout=TIMEOUT, metadata=[("x-tag", tag)])
        for _, item in zip(range(30), call):
            pass
        call.cancel()
        assert call.code() == grpc.StatusCode.CANCELLED
    finally:
        stop.set()
    stats = wait_handler_end(streams, tag)
    assert stats.tag_outcome == "CANCELLED"
    assert_healthy(streams)


def test_deadline_expires_mid_server_stream(streams):
    tag = new_tag()
    started = time.monotonic()
    call = streams.Count(spb.CountRequest(count=100_000, delay_ms=10), timeout=0.5, metadata=[("x-tag", tag)])
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for item in call:
            received.append(item.sequence)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    assert 5 <= len(received) < 100, len(received)
    assert received == list(range(len(received)))
    stats = wait_handler_end(streams, tag)
    assert stats.tag_outcome in ("DEADLINE_EXCEEDED", "CANCELLED"), stats
    assert_healthy(streams)


def test_deadline_expires_mid_bidi_stream(streams):
    stop = threading.Event()
    tag = new_tag()
    try:
        call = streams.Chat(endless(stop, pause=0.005), timeout=0.5, metadata=[("x-tag", tag)])
        count = 0
        with pytest.raises(grpc.RpcError) as info:
            for _ in call:
                count += 1
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert count > 5
    finally:
        stop.set()
    stats = wait_handler_end(streams, tag)
    assert stats.tag_outcome in ("DEADLINE_EXCEEDED", "CANCELLED"), stats
    assert_healthy(streams)


def test_deadline_while_client_stream_is_open(streams):
    feeder = Feeder()
    tag = new_tag()
    future = streams.Sum.future(feeder, timeout=0.4, metadata=[("x-tag", tag)])
    feeder.send(spb.Item(sequence=1))
    try:
        with pytest.raises(grpc.RpcError) as info:
            future.result(timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        feeder.close()
    stats = wait_handler_end(streams, tag)
    assert stats.tag_outcome in ("DEADLINE_EXCEEDED", "CANCELLED"), stats
    assert_healthy(streams)


def test_no_handler_left_running(streams):
    # After everything above (and before anything else starts one), no StreamTest handler runs.
    deadline = time.monotonic() + 5
    while (active := streams.Stats(spb.StatsRequest(), timeout=TIMEOUT).active) != 0:
        assert time.monotonic() < deadline, f"{active} handlers still running"
        time.sleep(0.05)


# ---------------------------------------------------------------- metadata

def test_response_headers_before_first_message(streams):
    # The handler sets response headers; they must be readable as soon as the first message is,
    # i.e. they arrive before it (the raw-HTTP/2 tests check the frame order).
    call = streams.Count(spb.CountRequest(count=3, delay_ms=100), timeout=TIMEOUT,
                         metadata=[("x-echo-first", "yes"), ("x-echo-data-bin", b"\x00\x01")])
    headers = dict((m.key, m.value) for m in call.initial_metadata())
    assert headers["x-echo-first"] == "yes"
    assert headers["x-echo-data-bin"] == b"\x00\x01"
    assert [item.sequence for item in call] == [0, 1, 2]
    trailers = dict((m.key, m.value) for m in call.trailing_metadata())
    assert trailers["x-echo-first"] == "yes"


def test_bidi_response_headers_and_trailers(streams):
    call = streams.Chat(items(3), timeout=TIMEOUT, metadata=[("x-echo-who", "bidi")])
    assert ("x-echo-who", "bidi") in [(m.key, m.value) for m in call.initial_metadata()]
    assert len(list(call)) == 3
    assert ("x-echo-who", "bidi") in [(m.key, m.value) for m in call.trailing_metadata()]


# ---------------------------------------------------------------- limits

def test_client_stream_message_over_limit_is_resource_exhausted(streams):
    tag = new_tag()
    big = spb.Item(sequence=2, payload=b"b" * (4 * 1024 * 1024))  # a few bytes over 4 MiB once encoded

    def requests():
        yield spb.Item(sequence=1, payload=b"small")
        yield big

    with pytest.raises(grpc.RpcError) as info:
        streams.Sum(requests(), timeout=TIMEOUT, metadata=[("x-tag", tag)])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stats = wait_handler_end(streams, tag)
    assert stats.tag_received == 1
    assert_healthy(streams)


def test_bidi_message_over_limit_is_resource_exhausted(streams):
    call = streams.Chat(iter([spb.Item(sequence=1), spb.Item(sequence=2, payload=b"b" * (5 * 1024 * 1024))]),
                        timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for item in call:
            received.append(item.sequence)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert received in ([], [1])
    assert_healthy(streams)


def test_client_stream_message_at_limit_is_accepted(streams):
    # Item encoding: 1 tag byte + 4 length bytes + payload = exactly 4 MiB.
    payload = b"a" * (4 * 1024 * 1024 - 5)
    assert len(spb.Item(payload=payload).SerializeToString()) == 4 * 1024 * 1024
    total = streams.Sum(iter([spb.Item(payload=payload)]), timeout=TIMEOUT)
    assert total.payload_bytes == len(payload)


def test_many_concurrent_streams_on_one_channel(streams):
    # More streams than the server's 256 per connection: grpcio queues the rest, all finish.
    calls = [streams.Count(spb.CountRequest(count=3, delay_ms=50), timeout=TIMEOUT) for _ in range(300)]
    results = []

    def drain(call):
        results.append([item.sequence for item in call])

    threads = [threading.Thread(target=drain, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(results) == 300 and all(r == [0, 1, 2] for r in results)


# ---------------------------------------------------------------- OrderService.WatchOrder (from memory)

def test_watch_order_follows_until_final(channel):
    orders = opb_grpc.OrderServiceStub(channel)
    placed = orders.PlaceOrder(opb.PlaceOrderRequest(customer_id="w1", items=["soup"], total_price=3,
                                                     restaurant_id="r9"), timeout=TIMEOUT)
    call = orders.WatchOrder(opb.WatchOrderRequest(order_id=placed.order_id), timeout=TIMEOUT)
    first = next(call)
    assert (first.order_id, first.status, first.final) == (placed.order_id, "PLACED", False)
    assert (first.customer_id, first.restaurant_id) == ("w1", "r9")
    assert first.updated_at_unix_ms > 0
    assert orders.CancelOrder(opb.CancelOrderRequest(order_id=placed.order_id), timeout=TIMEOUT).status == "CANCELED"
    rest = list(call)
    assert [(u.status, u.final) for u in rest] == [("CANCELED", True)]
    assert call.code() == grpc.StatusCode.OK
    # A final order answers its state and ends at once.
    again = list(orders.WatchOrder(opb.WatchOrderRequest(order_id=placed.order_id), timeout=TIMEOUT))
    assert [(u.status, u.final) for u in again] == [("CANCELED", True)]


def test_watch_unknown_order_is_not_found(channel):
    orders = opb_grpc.OrderServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(orders.WatchOrder(opb.WatchOrderRequest(order_id="order_nope"), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------- server reflection (a bidi service)

def test_reflection_lists_and_describes_the_test_service(channel):
    requests = [rpb.ServerReflectionRequest(list_services=""),
                rpb.ServerReflectionRequest(file_containing_symbol="interop.streams.StreamTest.Chat"),
                rpb.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")]
    answers = list(rpb_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter(requests), timeout=TIMEOUT))
    assert len(answers) == 3
    services = {s.name for s in answers[0].list_services_response.service}
    assert {"interop.streams.StreamTest", "order_service.OrderService", "grpc.health.v1.Health"} <= services
    from google.protobuf import descriptor_pb2
    (file,) = answers[1].file_descriptor_response.file_descriptor_proto
    described = descriptor_pb2.FileDescriptorProto.FromString(file)
    assert described.package == "interop.streams"
    assert [m.name for m in described.service[0].method] == ["Echo", "Count", "Sum", "Chat", "Stats"]
    assert answers[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
