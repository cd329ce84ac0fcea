"""grpcio (the reference gRPC implementation) as a client of our Swift server.

Why: passing our own Swift client against our own Swift server proves only self-consistency.
These tests drive `grpc-interop-server` from grpcio to prove the server speaks standard gRPC:
every unary method's success and error cases, all status codes with exact `details()`
round trips (percent-encoding of grpc-message), unknown services and methods, health checks,
deadlines, cancellation, text and binary metadata in headers and trailers, concurrency on one
and many connections, the message size limit, and graceful shutdown on SIGTERM.
"""
import concurrent.futures
import socket
import threading
import time

import grpc
import pytest

from conftest import health_pb2, health_pb2_grpc, order_service_pb2 as pb, order_service_pb2_grpc as pb_grpc

SERVICE = "order_service.OrderService"


def place(stub, customer="c1", items=("pizza",), price=12.5, **kwargs):
    return stub.PlaceOrder(pb.PlaceOrderRequest(customer_id=customer, items=list(items), total_price=price),
                           timeout=10, **kwargs)


def order_number(order_id: str) -> int:
    assert order_id.startswith("order_"), order_id
    return int(order_id[len("order_"):])


# ---------------------------------------------------------------- OrderService semantics

def test_place_then_get_order(orders):
    placed = place(orders, items=["pizza", "salad"], price=23.75)
    assert placed.status == "PLACED"
    order_number(placed.order_id)
    got = orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id=placed.order_id), timeout=10)
    assert got.order_id == placed.order_id
    assert got.status == "PLACED"
    assert list(got.items) == ["pizza", "salad"]
    assert got.total_price == 23.75


def test_order_ids_increase(orders):
    first = order_number(place(orders).order_id)
    second = order_number(place(orders).order_id)
    assert second > first


def test_place_order_with_non_ascii_fields_round_trips(orders):
    placed = place(orders, items=["café ✓", "naïve 寿司", ""], price=0.0)
    got = orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id=placed.order_id), timeout=10)
    assert list(got.items) == ["café ✓", "naïve 寿司", ""]
    assert got.total_price == 0.0


def test_place_order_with_empty_request(orders):
    # An all-default message is zero bytes on the wire: a 5-byte prefix with length 0.
    placed = orders.PlaceOrder(pb.PlaceOrderRequest(), timeout=10)
    assert placed.status == "PLACED"
    got = orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id=placed.order_id), timeout=10)
    assert list(got.items) == []


def test_get_unknown_order_is_not_found(orders):
    with pytest.raises(grpc.RpcError) as info:
        orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id="order_999999"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "order_999999" in info.value.details()


def test_not_found_message_with_non_ascii_id_round_trips(orders):
    # The id comes back inside grpc-message: UTF-8, percent-encoded on the wire, decoded by grpcio.
    weird = "café ✓ 100% done %41 \t"
    with pytest.raises(grpc.RpcError) as info:
        orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id=weird), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == f"order '{weird}' not found"


def test_cancel_order_then_cancel_again(orders):
    placed = place(orders)
    first = orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id), timeout=10)
    assert (first.order_id, first.status) == (placed.order_id, "CANCELED")
    got = orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id=placed.order_id), timeout=10)
    assert got.status == "CANCELED"
    second = orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id), timeout=10)
    assert (second.order_id, second.status) == (placed.order_id, "COULD_NOT_CANCEL")


def test_cancel_unknown_order_is_not_found(orders):
    with pytest.raises(grpc.RpcError) as info:
        orders.CancelOrder(pb.CancelOrderRequest(order_id="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "order 'nope' not found"


def test_record_restaurant_decision_is_unimplemented(orders):
    with pytest.raises(grpc.RpcError) as info:
        orders.RecordRestaurantDecision(
            pb.RecordRestaurantDecisionRequest(order_id="order_1", restaurant_id="r", decision="ACCEPTED"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---------------------------------------------------------------- status codes

ALL_ERROR_CODES = [code for code in grpc.StatusCode if code != grpc.StatusCode.OK]


def test_every_status_code_is_covered():
    assert len(ALL_ERROR_CODES) == 16
    assert sorted(code.value[0] for code in ALL_ERROR_CODES) == list(range(1, 17))


@pytest.mark.parametrize("code", ALL_ERROR_CODES, ids=lambda c: c.name)
def test_status_code_and_message_round_trip(orders, code):
    # grpcio only sends printable ASCII in text metadata, so the message here is ASCII with every
    # character that needs care ('%', spaces, punctuation); non-ASCII messages are covered by
    # test_not_found_message_with_non_ascii_id_round_trips and the raw HTTP/2 tests.
    message = f"failure {code.value[0]}: 100% sure ~!@#$^&*()_+{{}}|:\"<>?`-=[]\\;',./ %2F end"
    with pytest.raises(grpc.RpcError) as info:
        place(orders, metadata=[("x-fail-code", str(code.value[0])), ("x-fail-message", message)])
    assert info.value.code() == code
    assert info.value.details() == message


@pytest.mark.parametrize("method", ["GetOrderStatus", "CancelOrder"])
def test_fail_code_applies_to_every_method(orders, method):
    request = {"GetOrderStatus": pb.GetOrderStatusRequest, "CancelOrder": pb.CancelOrderRequest}[method](order_id="x")
    with pytest.raises(grpc.RpcError) as info:
        getattr(orders, method)(request, timeout=10, metadata=[("x-fail-code", "7"), ("x-fail-message", "no")])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "no"


def test_error_without_message_has_empty_details(orders):
    with pytest.raises(grpc.RpcError) as info:
        place(orders, metadata=[("x-fail-code", "10")])
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert info.value.details() in ("", None)


# ---------------------------------------------------------------- unknown methods and services

def test_unknown_method_is_unimplemented(channel):
    call = channel.unary_unary(f"/{SERVICE}/Nope", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unknown_service_is_unimplemented(channel):
    call = channel.unary_unary("/no.such.Service/PlaceOrder", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        call(b"\x0a\x01x", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_connection_still_works_after_unimplemented(channel, orders):
    call = channel.unary_unary("/x/y", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            call(b"", timeout=10)
    assert place(orders).status == "PLACED"


# ---------------------------------------------------------------- health

@pytest.mark.parametrize("service", ["", SERVICE, "grpc.health.v1.Health"])
def test_health_serving(health, service):
    response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["no.such.Service", "order_service.orderservice", "restaurant_service.RestaurantService"])
def test_health_unknown_service_is_not_found(health, service):
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_streams_the_current_status(channel):
    # Watch (a server stream, added with streaming support) answers the current status at once
    # and keeps the stream open for later changes; a service it does not serve is SERVICE_UNKNOWN.
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch",
                                 request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                 response_deserializer=health_pb2.HealthCheckResponse.FromString)
    stream = watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()
    unknown = watch(health_pb2.HealthCheckRequest(service="nope.Nope"), timeout=10)
    assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    unknown.cancel()


# ---------------------------------------------------------------- deadlines and cancellation

def test_deadline_exceeded_quickly(orders):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id="x"), timeout=0.2, metadata=[("x-sleep-ms", "2000")])
    elapsed = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.5, f"took {elapsed:.2f}s: the deadline did not end the call"


def test_sleep_within_deadline_succeeds(orders):
    placed = place(orders, metadata=[("x-sleep-ms", "100")])
    assert placed.status == "PLACED"


def test_deadline_cancels_handler(start_server):
    # The handler sleeps before placing; if the deadline cancels its task, no order number is used.
    server = start_server()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        before = order_number(place(stub).order_id)
        with pytest.raises(grpc.RpcError) as info:
            stub.PlaceOrder(pb.PlaceOrderRequest(customer_id="late"), timeout=0.3, metadata=[("x-sleep-ms", "1000")])
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.5)  # well past the handler's sleep
        after = order_number(place(stub).order_id)
        assert after == before + 1, "the timed-out handler still ran to completion (it placed an order)"


def test_future_cancel(start_server):
    server = start_server()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        before = order_number(place(stub).order_id)
        future = stub.PlaceOrder.future(pb.PlaceOrderRequest(customer_id="gone"), timeout=10,
                                        metadata=[("x-sleep-ms", "1000")])
        time.sleep(0.3)
        assert future.cancel()
        assert future.cancelled()
        with pytest.raises(grpc.FutureCancelledError):
            future.result()
        time.sleep(1.5)
        after = order_number(place(stub).order_id)
        assert after == before + 1, "the cancelled handler was not cancelled (it placed an order)"
        assert server.alive()


# ---------------------------------------------------------------- metadata

BINARY = bytes([0x00, 0xFF, 0x01, 0x80, 0x7F, 0x0A, 0x0D, 0x00, 0xFE])


def _values(metadata, key):
    return [m.value for m in metadata if m.key == key]


def test_metadata_round_trip_success(orders):
    response, call = orders.PlaceOrder.with_call(
        pb.PlaceOrderRequest(customer_id="m"), timeout=10,
        metadata=[("x-echo-a", "hello world"), ("x-echo-data-bin", BINARY), ("x-not-echoed", "q")])
    assert response.status == "PLACED"
    initial, trailing = call.initial_metadata(), call.trailing_metadata()
    for name, md in (("initial", initial), ("trailing", trailing)):
        assert _values(md, "x-echo-a") == ["hello world"], f"{name} metadata: {md}"
        assert _values(md, "x-echo-data-bin") == [BINARY], f"{name} metadata: {md}"
        assert _values(md, "x-not-echoed") == [], f"{name} metadata: {md}"


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 255, 1000])
def test_binary_metadata_lengths(orders, size):
    data = bytes((i * 37 + 0xFF) % 256 for i in range(size))
    _, call = orders.PlaceOrder.with_call(pb.PlaceOrderRequest(), timeout=10, metadata=[("x-echo-data-bin", data)])
    assert _values(call.initial_metadata(), "x-echo-data-bin") == [data]
    assert _values(call.trailing_metadata(), "x-echo-data-bin") == [data]


def test_repeated_metadata_keys_keep_order(orders):
    _, call = orders.PlaceOrder.with_call(pb.PlaceOrderRequest(), timeout=10,
                                          metadata=[("x-echo-multi", "1"), ("x-echo-multi", "2"), ("x-echo-multi", "3")])
    assert _values(call.initial_metadata(), "x-echo-multi") == ["1", "2", "3"]
    assert _values(call.trailing_metadata(), "x-echo-multi") == ["1", "2", "3"]


def test_metadata_round_trip_on_error(orders):
    # An error before any message is Trailers-Only: echoed metadata must arrive as trailers.
    with pytest.raises(grpc.RpcError) as info:
        place(orders, metadata=[("x-fail-code", "9"), ("x-fail-message", "nope"), ("x-echo-a", "v"),
                                ("x-echo-data-bin", BINARY)])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trailing = info.value.trailing_metadata()
    assert _values(trailing, "x-echo-a") == ["v"], trailing
    assert _values(trailing, "x-echo-data-bin") == [BINARY], trailing


# ---------------------------------------------------------------- concurrency

def _round_trip(stub, i):
    items = [f"item-{i}", f"extra-{i}"]
    placed = stub.PlaceOrder(pb.PlaceOrderRequest(customer_id=f"c{i}", items=items, total_price=float(i)),
                             timeout=30, metadata=[("x-sleep-ms", "20"), ("x-echo-i", str(i))])
    got = stub.GetOrderStatus(pb.GetOrderStatusRequest(order_id=placed.order_id), timeout=30)
    assert (got.order_id, list(got.items), got.total_price) == (placed.order_id, items, float(i))
    return placed.order_id


def test_200_concurrent_calls_one_channel(channel):
    stub = pb_grpc.OrderServiceStub(channel)
    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        ids = list(pool.map(lambda i: _round_trip(stub, i), range(200)))
    assert len(set(ids)) == 200


def test_200_concurrent_calls_many_channels(server):
    channels = [grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(8)]
    try:
        stubs = [pb_grpc.OrderServiceStub(ch) for ch in channels]
        with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
            ids = list(pool.map(lambda i: _round_trip(stubs[i % len(stubs)], i), range(200)))
        assert len(set(ids)) == 200
    finally:
        for ch in channels:
            ch.close()


def test_concurrent_errors_and_successes_do_not_mix(channel):
    stub = pb_grpc.OrderServiceStub(channel)

    def call(i):
        code = i % 17
        md = [("x-sleep-ms", str(i % 5 * 10)), ("x-echo-n", str(i))]
        if code:
            md += [("x-fail-code", str(code)), ("x-fail-message", f"m{i}")]
        try:
            _, c = stub.PlaceOrder.with_call(pb.PlaceOrderRequest(), timeout=30, metadata=md)
            return (i, 0, "", _values(c.trailing_metadata(), "x-echo-n"))
        except grpc.RpcError as e:
            return (i, e.code().value[0], e.details(), _values(e.trailing_metadata(), "x-echo-n"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(call, range(170)))
    for i, code, details, echo in results:
        assert code == i % 17
        assert details == ("" if code == 0 else f"m{i}")
        assert echo == [str(i)]


# ---------------------------------------------------------------- message size limit

def _serialized_place_size(item_len):
    return pb.PlaceOrderRequest(items=["x" * item_len]).ByteSize()


def test_message_over_limit_is_resource_exhausted(start_server):
    server = start_server("--max-message-size", "1024")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.PlaceOrder(pb.PlaceOrderRequest(customer_id="big", items=["x" * 5000]), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The same connection keeps working.
        assert stub.PlaceOrder(pb.PlaceOrderRequest(customer_id="small", items=["y"]), timeout=10).status == "PLACED"


def test_message_far_over_limit_does_not_stall_connection(start_server):
    # A body several flow-control windows long: the server must answer and keep the connection usable.
    server = start_server("--max-message-size", "1024")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                stub.PlaceOrder(pb.PlaceOrderRequest(items=["x" * 300_000]), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.PlaceOrder(pb.PlaceOrderRequest(items=["y"]), timeout=10).status == "PLACED"


def test_message_exactly_at_limit_is_accepted(start_server):
    server = start_server("--max-message-size", "1024")
    item_len = next(n for n in range(900, 1100) if _serialized_place_size(n) == 1024)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        assert stub.PlaceOrder(pb.PlaceOrderRequest(items=["x" * item_len]), timeout=10).status == "PLACED"
        with pytest.raises(grpc.RpcError) as info:
            stub.PlaceOrder(pb.PlaceOrderRequest(items=["x" * (item_len + 1)]), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_large_message_under_default_limit(orders):
    items = ["x" * 100_000 for _ in range(20)]  # ~2 MB, under the default 4 MiB
    placed = orders.PlaceOrder(pb.PlaceOrderRequest(items=items), timeout=30)
    got = orders.GetOrderStatus(pb.GetOrderStatusRequest(order_id=placed.order_id), timeout=30)
    assert list(got.items) == items  # and a ~2 MB response comes back intact


# ---------------------------------------------------------------- graceful shutdown

def _connect_refused_or_closed(port, wait_s=3.0):
    """True if a new TCP connection is refused, or accepted and then closed without service."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=wait_s)
    except ConnectionRefusedError:
        return True
    try:
        sock.settimeout(wait_s)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        deadline = time.monotonic() + wait_s
        received = b""
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True
            received += data
            # A GOAWAY frame (type 7) tells us it will not be served either.
            offset = 0
            while len(received) - offset >= 9:
                length = int.from_bytes(received[offset:offset + 3], "big")
                if received[offset + 3] == 0x07:
                    return True
                offset += 9 + length
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    finally:
        sock.close()


def _open_h2(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    return sock


def _wait_goaway(sock, timeout):
    """True once a GOAWAY frame arrives (frames are parsed from the start of the stream)."""
    deadline = time.monotonic() + timeout
    received = b""
    offset = 0
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            return False
        received += data
        while len(received) - offset >= 9:
            length = int.from_bytes(received[offset:offset + 3], "big")
            if received[offset + 3] == 0x07:
                return True
            offset += 9 + length
    return False


def test_graceful_shutdown(start_server):
    server = start_server("--grace-period-ms", "5000")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        assert place(stub).status == "PLACED"  # connected
        future = stub.PlaceOrder.future(pb.PlaceOrderRequest(customer_id="in-flight"), timeout=15,
                                        metadata=[("x-sleep-ms", "500")])
        watcher = _open_h2(server.port)  # sees the GOAWAY that shows shutdown has begun
        time.sleep(0.15)  # let the call reach the handler
        server.terminate()
        assert _wait_goaway(watcher, 5), "no GOAWAY on an open connection after SIGTERM"
        watcher.close()
        # Health during shutdown: NOT_SERVING if the server still answers it at all.
        try:
            h = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            assert h.status == health_pb2.HealthCheckResponse.NOT_SERVING
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e
        response = future.result(timeout=15)
        assert response.status == "PLACED"
    assert server.wait(15) == 0, f"exit code {server.proc.returncode}; log:\n{server.read_log()}"
    assert _connect_refused_or_closed(server.port)
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.OrderServiceStub(channel).PlaceOrder(pb.PlaceOrderRequest(), timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_new_connections_not_served_during_shutdown(start_server):
    # While an RPC is still draining, a new client must be turned away (refused, or closed),
    # not left hanging on a connection nobody will ever serve.
    server = start_server("--grace-period-ms", "10000")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        assert place(stub).status == "PLACED"
        future = stub.PlaceOrder.future(pb.PlaceOrderRequest(), timeout=20, metadata=[("x-sleep-ms", "4000")])
        watcher = _open_h2(server.port)
        time.sleep(0.3)
        server.terminate()
        assert _wait_goaway(watcher, 5), "no GOAWAY on an open connection after SIGTERM"
        watcher.close()
        assert server.alive(), "the server did not wait for the in-flight call"
        turned_away = _connect_refused_or_closed(server.port, wait_s=2.0)
        assert future.result(timeout=20).status == "PLACED"
    assert server.wait(15) == 0
    assert turned_away, ("a new connection made during shutdown was accepted by the kernel but never "
                         "served or closed (the listening socket stays open until exit)")


def test_shutdown_with_idle_connections_exits_promptly(start_server):
    server = start_server("--grace-period-ms", "10000")
    channels = [grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(3)]
    try:
        for ch in channels:
            assert place(pb_grpc.OrderServiceStub(ch)).status == "PLACED"
        started = time.monotonic()
        server.terminate()
        assert server.wait(15) == 0
        assert time.monotonic() - started < 5, "idle connections held the shutdown for the grace period"
    finally:
        for ch in channels:
            ch.close()


def test_shutdown_grace_period_expires(start_server):
    # A handler that outlives the grace period is cut off; the process still exits 0.
    server = start_server("--grace-period-ms", "300")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        assert place(stub).status == "PLACED"
        future = stub.PlaceOrder.future(pb.PlaceOrderRequest(), timeout=20, metadata=[("x-sleep-ms", "10000")])
        time.sleep(0.3)
        server.terminate()
        assert server.wait(10) == 0
        with pytest.raises(grpc.RpcError) as info:
            future.result(timeout=10)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                     grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
