"""The server against hand-made HTTP/2 (the `h2` package over a plain socket, h2c prior knowledge).

Why: grpcio never sends malformed requests, so the server's handling of the "gRPC over HTTP/2"
spec's edge cases (content-type, method, compression flag, framing, message count, Trailers-Only
shape, grpc-timeout, header-list limit, RST_STREAM, bad prefaces, idle and connection limits) can
only be provoked frame by frame. Every test also checks that the server keeps serving afterwards.
"""
import gzip
import socket
import struct
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest

from conftest import order_service_pb2 as pb, order_service_pb2_grpc as pb_grpc

PLACE = "/order_service.OrderService/PlaceOrder"
GET = "/order_service.OrderService/GetOrderStatus"


def frame(message: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", 1 if compressed else 0, len(message)) + message


def unframe(body: bytes):
    messages = []
    while body:
        flag, length = struct.unpack(">BI", body[:5])
        assert flag == 0
        messages.append(body[5:5 + length])
        body = body[5 + length:]
    return messages


class Response:
    def __init__(self):
        self.events = []          # event class names in order
        self.headers = None       # dict of the first HEADERS
        self.header_list = None
        self.data = b""
        self.trailers = None
        self.ended = False
        self.reset = None         # RST_STREAM error code

    @property
    def status(self):
        fields = self.trailers if self.trailers is not None else self.headers
        value = (fields or {}).get(b"grpc-status")
        return None if value is None else int(value)

    @property
    def message(self):
        fields = self.trailers if self.trailers is not None else self.headers
        return (fields or {}).get(b"grpc-message")


class H2Client:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                           validate_outbound_headers=False, normalize_outbound_headers=False,
                                           validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.flush()
        self.responses = {}
        self.goaway = None
        self.closed = False
        self.pings = 0

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, path=PLACE, method="POST", content_type="application/grpc", extra=(), end_stream=False):
        stream = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                  ("te", "trailers")]
        if content_type is not None:
            fields.append(("content-type", content_type))
        fields += list(extra)
        fields = [(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
                  for k, v in fields]
        self.conn.send_headers(stream, fields, end_stream=end_stream)
        self.flush()
        self.responses[stream] = Response()
        return stream

    def data(self, stream, payload, end_stream=False, timeout=10.0):
        """Sends payload in frames the peer accepts, waiting for flow-control credit as needed.

        Stops early (returns False) if the stream closes meanwhile (the server answered early).
        """
        deadline = time.monotonic() + timeout
        offset = 0
        while True:
            response = self.responses.get(stream)
            if response is not None and response.reset is not None:
                return False
            try:
                window = self.conn.local_flow_control_window(stream)
            except h2.exceptions.StreamClosedError:
                return False
            size = min(len(payload) - offset, window, self.conn.max_outbound_frame_size)
            last = offset + size == len(payload)
            if size > 0 or last:
                try:
                    self.conn.send_data(stream, payload[offset:offset + size], end_stream=end_stream and last)
                except h2.exceptions.StreamClosedError:
                    return False
                self.flush()
                offset += size
                if last:
                    return True
                continue
            assert time.monotonic() < deadline, f"no flow-control credit on stream {stream} for {timeout}s"
            if not self.pump():
                return False

    def call(self, path=PLACE, body=b"", end_stream=True, **kwargs):
        stream = self.headers(path=path, **kwargs)
        if body or end_stream:
            self.data(stream, body, end_stream=end_stream)
        return stream

    def pump(self):
        """Reads once and dispatches events; returns False once the connection is closed."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._on(event)
        try:
            self.flush()
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
        return True

    def _on(self, event):
        stream = getattr(event, "stream_id", None)
        response = self.responses.get(stream)
        if response is not None:
            response.events.append(type(event).__name__)
        if isinstance(event, h2.events.ResponseReceived):
            response.header_list = list(event.headers)
            response.headers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            response.data += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
        elif isinstance(event, h2.events.TrailersReceived):
            response.trailers = dict(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            response.ended = True
        elif isinstance(event, h2.events.StreamReset):
            if response is not None:
                response.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings += 1

    def wait(self, stream, timeout=10.0):
        response = self.responses[stream]
        deadline = time.monotonic() + timeout
        while not (response.ended or response.reset is not None):
            assert time.monotonic() < deadline, f"stream {stream} got no complete answer: {response.events}"
            if not self.pump():
                raise AssertionError(f"connection closed before stream {stream} finished: {response.events}")
        return response

    def wait_closed(self, timeout):
        """True if the server closes the connection (EOF or reset) within timeout."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if not self.pump():
                    return True
            except socket.timeout:
                continue
            except h2.exceptions.ProtocolError:
                continue
        return False

    def close(self):
        self.sock.close()


@pytest.fixture
def client(server):
    c = H2Client(server.port)
    yield c
    c.close()


def assert_server_healthy(server):
    assert server.alive(), server.read_log()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderServiceStub(channel)
        assert stub.PlaceOrder(pb.PlaceOrderRequest(customer_id="check"), timeout=10).status == "PLACED"


def place_request(**fields):
    return pb.PlaceOrderRequest(customer_id="raw", items=["a"], total_price=1.0, **fields).SerializeToString()


# ---------------------------------------------------------------- response shapes

def test_success_response_shape(client):
    stream = client.call(body=frame(place_request()))
    r = client.wait(stream)
    assert r.reset is None
    assert r.headers[b":status"] == b"200"
    assert r.headers[b"content-type"].startswith(b"application/grpc")
    assert b"grpc-status" not in r.headers, "a response with a message must not carry grpc-status in its headers"
    assert r.events[0] == "ResponseReceived"
    assert "DataReceived" in r.events and "TrailersReceived" in r.events
    assert r.events.index("DataReceived") < r.events.index("TrailersReceived")
    assert r.trailers[b"grpc-status"] == b"0"
    assert b":status" not in r.trailers
    (message,) = unframe(r.data)
    reply = pb.PlaceOrderResponse.FromString(message)
    assert reply.status == "PLACED" and reply.order_id.startswith("order_")


def test_trailers_only_shape_for_error(client):
    stream = client.call(body=frame(place_request()), extra=[("x-fail-code", "5"), ("x-fail-message", "gone")])
    r = client.wait(stream)
    # One HEADERS frame carrying END_STREAM: ResponseReceived immediately followed by StreamEnded.
    assert r.events == ["ResponseReceived", "StreamEnded"], r.events
    assert r.trailers is None and r.data == b""
    assert r.headers[b":status"] == b"200"
    assert r.headers[b"content-type"].startswith(b"application/grpc")
    assert r.headers[b"grpc-status"] == b"5"
    assert r.headers[b"grpc-message"] == b"gone"


def test_trailers_only_shape_for_unknown_method(client):
    stream = client.call(path="/order_service.OrderService/Nope", body=frame(b""))
    r = client.wait(stream)
    assert r.events == ["ResponseReceived", "StreamEnded"], r.events
    assert r.headers[b":status"] == b"200"
    assert r.status == 12


def test_grpc_message_is_percent_encoded_utf8(client):
    text = "café ✓ 100%"
    stream = client.call(body=frame(place_request()),
                         extra=[("x-fail-code", "3"), (b"x-fail-message", text.encode("utf-8"))])
    r = client.wait(stream)
    assert r.status == 3
    assert r.message == b"caf%C3%A9 %E2%9C%93 100%25"


@pytest.mark.parametrize("code", range(1, 17))
def test_every_code_with_non_ascii_message(client, code):
    text = f"échec {code} ✓ 100% — ok"
    stream = client.call(body=frame(place_request()),
                         extra=[("x-fail-code", str(code)), (b"x-fail-message", text.encode("utf-8"))])
    r = client.wait(stream)
    assert r.status == code
    from urllib.parse import unquote_to_bytes
    assert unquote_to_bytes(r.message).decode("utf-8") == text
    assert all(0x20 <= b <= 0x7E for b in r.message), r.message


def test_message_split_into_one_byte_data_frames(client):
    body = frame(place_request(restaurant_id="r1"))
    stream = client.headers()
    for i in range(len(body)):
        client.data(stream, body[i:i + 1])
    client.data(stream, b"", end_stream=True)
    r = client.wait(stream)
    assert r.trailers[b"grpc-status"] == b"0"


def test_concurrent_streams_on_one_connection(client):
    streams = {}
    for i in range(20):
        s = client.headers(extra=[("x-sleep-ms", str((20 - i) * 10)), ("x-echo-i", str(i))])
        streams[s] = i
    for s in streams:
        client.data(s, frame(place_request()), end_stream=True)
    for s, i in streams.items():
        r = client.wait(s)
        assert r.trailers[b"grpc-status"] == b"0"
        assert r.headers[b"x-echo-i"] == str(i).encode()
        assert r.trailers[b"x-echo-i"] == str(i).encode()


def test_content_type_grpc_proto_accepted(client):
    stream = client.call(body=frame(place_request()), content_type="application/grpc+proto")
    r = client.wait(stream)
    assert r.headers[b":status"] == b"200"
    assert r.trailers[b"grpc-status"] == b"0"


def test_unpadded_binary_metadata_accepted(client):
    # Spec: implementations must accept padded and unpadded base64; we send unpadded.
    stream = client.call(body=frame(place_request()), extra=[("x-echo-data-bin", "AP8")])  # 0x00 0xff
    r = client.wait(stream)
    assert r.trailers[b"grpc-status"] == b"0"
    import base64
    assert base64.b64decode(r.headers[b"x-echo-data-bin"] + b"==") == b"\x00\xff"


def test_ping_is_acknowledged(client):
    client.conn.ping(b"12345678")
    client.flush()
    deadline = time.monotonic() + 5
    while client.pings == 0 and time.monotonic() < deadline:
        client.pump()
    assert client.pings == 1


# ---------------------------------------------------------------- HTTP-level rejections

@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/grpc-web", None])
def test_wrong_content_type_is_415(client, server, content_type):
    stream = client.call(body=frame(place_request()), content_type=content_type)
    r = client.wait(stream)
    assert r.headers[b":status"] == b"415"
    assert r.status == 13
    assert_server_healthy(server)


def test_get_is_405(client, server):
    stream = client.headers(method="GET", end_stream=True)
    r = client.wait(stream)
    assert r.headers[b":status"] == b"405"
    assert_server_healthy(server)


# ---------------------------------------------------------------- message framing

def test_compressed_with_gzip_encoding_is_unimplemented(client):
    stream = client.call(body=frame(gzip.compress(place_request()), compressed=True), extra=[("grpc-encoding", "gzip")])
    r = client.wait(stream)
    assert r.status == 12, (r.headers, r.trailers)


def test_compressed_without_encoding_is_internal(client):
    stream = client.call(body=frame(place_request(), compressed=True))
    r = client.wait(stream)
    assert r.status == 13


def test_compressed_with_identity_encoding_is_internal(client):
    stream = client.call(body=frame(place_request(), compressed=True), extra=[("grpc-encoding", "identity")])
    r = client.wait(stream)
    assert r.status == 13


def test_uncompressed_with_gzip_encoding_header_is_fine(client):
    # The flag, not the header, says whether a message is compressed.
    stream = client.call(body=frame(place_request()), extra=[("grpc-encoding", "gzip")])
    r = client.wait(stream)
    assert r.trailers is not None and r.trailers[b"grpc-status"] == b"0", (r.headers, r.trailers)


def test_undecodable_protobuf_is_internal(client):
    stream = client.call(body=frame(b"\xff\xff\xff"))
    r = client.wait(stream)
    assert r.status == 13


def test_zero_messages_is_unimplemented(client):
    stream = client.headers(end_stream=True)
    r = client.wait(stream)
    assert r.status == 12


def test_zero_messages_empty_data_is_unimplemented(client):
    stream = client.call(body=b"", end_stream=True)
    r = client.wait(stream)
    assert r.status == 12


def test_two_messages_in_one_data_frame_is_unimplemented(client):
    stream = client.call(body=frame(place_request()) + frame(place_request()))
    r = client.wait(stream)
    assert r.status == 12


def test_two_messages_in_two_data_frames_is_unimplemented(client):
    stream = client.headers()
    client.data(stream, frame(place_request()))
    client.data(stream, frame(place_request()), end_stream=True)
    r = client.wait(stream)
    assert r.status == 12


@pytest.mark.parametrize("body", [frame(place_request())[:-2], b"\x00\x00\x00"], ids=["payload", "prefix"])
def test_truncated_message_is_internal(client, body):
    stream = client.call(body=body)
    r = client.wait(stream)
    assert r.status == 13


def test_grpc_timeout_enforced_by_server(client, server):
    started = time.monotonic()
    stream = client.call(body=frame(place_request()), extra=[("grpc-timeout", "200m"), ("x-sleep-ms", "3000")])
    r = client.wait(stream, timeout=10)
    assert r.status == 4
    assert time.monotonic() - started < 2.5


def test_grpc_timeout_not_reached(client):
    stream = client.call(body=frame(place_request()), extra=[("grpc-timeout", "5S"), ("x-sleep-ms", "50")])
    r = client.wait(stream)
    assert r.trailers[b"grpc-status"] == b"0"


@pytest.mark.parametrize("timeout", ["99999999H", "99999999M", "99999999S"])
def test_largest_grpc_timeouts_are_served(client, server, timeout):
    # The largest values the header allows (11,000 years and more) must neither crash the server
    # nor be mistaken for a deadline already past.
    stream = client.call(body=frame(place_request()), extra=[("grpc-timeout", timeout)])
    r = client.wait(stream)
    assert r.trailers[b"grpc-status"] == b"0"
    assert_server_healthy(server)


# ---------------------------------------------------------------- resilience

def test_garbage_instead_of_preface_closes_connection(server):
    with grpc.insecure_channel(server.address) as channel:  # an unrelated, established connection
        stub = pb_grpc.OrderServiceStub(channel)
        assert stub.PlaceOrder(pb.PlaceOrderRequest(), timeout=10).status == "PLACED"
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            sock.sendall(b"\x16\x03\x01 this is not HTTP/2 at all \xff\x00" * 20)
            closed = _wait_eof(sock, 5)
        finally:
            sock.close()
        assert closed, "the server did not close a connection that sent garbage"
        assert stub.PlaceOrder(pb.PlaceOrderRequest(), timeout=10).status == "PLACED"
    assert_server_healthy(server)


def test_http1_request_closes_connection(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _wait_eof(sock, 5)
    finally:
        sock.close()
    assert_server_healthy(server)


def test_garbage_frame_after_preface_gets_goaway(server):
    c = H2Client(server.port)
    try:
        # A DATA frame on stream 0 is a connection error (RFC 9113 6.1): GOAWAY, then close.
        c.sock.sendall(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00" + b"abcd")
        closed = c.wait_closed(5)
        assert c.goaway is not None or closed
        assert closed, "connection not closed after a connection error"
    finally:
        c.close()
    assert_server_healthy(server)


def _wait_eof(sock, timeout):
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def test_oversized_header_list_is_resource_exhausted(client, server):
    stream = client.call(body=frame(place_request()), extra=[("x-big", "v" * 20_000)])
    r = client.wait(stream)
    assert r.status == 8, (r.events, r.headers, r.trailers)
    assert b"16384" in r.message
    assert_server_healthy(server)


def test_header_flood_far_past_the_limit_resets_the_stream(client, server):
    extra = [(f"x-h{i}", "v" * 4000) for i in range(20)]  # 80 KB: more than 4x the limit
    stream = client.call(body=frame(place_request()), extra=extra)
    try:
        r = client.wait(stream)
        assert r.reset is not None, (r.events, r.headers, r.trailers)
    except AssertionError as error:
        if "connection closed" not in str(error):
            raise
    assert_server_healthy(server)


def test_invalid_base64_binary_metadata_is_internal(client, server):
    stream = client.call(body=frame(place_request()), extra=[("x-data-bin", "!!not base64!!")])
    r = client.wait(stream)
    assert r.status == 13, (r.events, r.headers, r.trailers)
    assert b"x-data-bin" in r.message


def test_header_list_split_across_many_headers_is_rejected(client, server):
    # 40 fields of 500 bytes: no single header is large, the list is > 16 KiB.
    extra = [(f"x-h{i}", "v" * 500) for i in range(40)]
    stream = client.call(body=frame(place_request()), extra=extra)
    r = client.wait(stream)
    assert r.status == 8, (r.events, r.headers, r.trailers)
    assert_server_healthy(server)


def test_header_list_just_under_limit_is_served(client):
    stream = client.call(body=frame(place_request()), extra=[("x-big", "v" * 12_000)])
    r = client.wait(stream)
    assert r.trailers is not None and r.trailers[b"grpc-status"] == b"0", (r.events, r.headers)


def test_client_reset_mid_call(start_server):
    server = start_server()
    c = H2Client(server.port)
    try:
        first = c.call(body=frame(place_request()))
        before = int(pb.PlaceOrderResponse.FromString(unframe(c.wait(first).data)[0]).order_id.split("_")[1])
        stream = c.call(body=frame(place_request()), extra=[("x-sleep-ms", "800")])
        time.sleep(0.2)
        c.conn.reset_stream(stream, error_code=8)  # CANCEL
        c.flush()
        time.sleep(1.5)
        nxt = c.call(body=frame(place_request()))
        r = c.wait(nxt)
        assert r.trailers[b"grpc-status"] == b"0"
        after = int(pb.PlaceOrderResponse.FromString(unframe(r.data)[0]).order_id.split("_")[1])
        assert after == before + 1, "the reset call's handler ran to completion (it placed an order)"
    finally:
        c.close()
    assert_server_healthy(server)


def test_idle_timeout_closes_connection(start_server):
    server = start_server("--idle-timeout-ms", "300")
    c = H2Client(server.port)
    try:
        r = c.wait(c.call(body=frame(place_request())))
        assert r.trailers[b"grpc-status"] == b"0"
        assert c.wait_closed(3.0), "the idle connection was not closed"
        assert c.goaway is not None, "the idle connection was closed without GOAWAY"
    finally:
        c.close()
    assert_server_healthy(server)


def test_idle_timeout_spares_busy_connection(start_server):
    server = start_server("--idle-timeout-ms", "300")
    c = H2Client(server.port)
    try:
        r = c.wait(c.call(body=frame(place_request()), extra=[("x-sleep-ms", "1200")]), timeout=10)
        assert r.trailers is not None and r.trailers[b"grpc-status"] == b"0"
    finally:
        c.close()


def test_max_connections_makes_room_by_closing_the_longest_idle(start_server):
    # At the limit a new connection is not refused while an idle one can make room: an idle one
    # is closed (the longest idle of the accepting loop's connections), so a flood of idle sockets
    # cannot lock honest clients out.
    server = start_server("--max-connections", "2")
    first, second = H2Client(server.port), H2Client(server.port)
    try:
        for c in (first, second):
            assert c.wait(c.call(body=frame(place_request()))).trailers[b"grpc-status"] == b"0"
        third = H2Client(server.port)
        try:
            assert third.wait(third.call(body=frame(place_request()))).trailers[b"grpc-status"] == b"0"
            deadline = time.monotonic() + 5
            closed = []
            while not closed and time.monotonic() < deadline:
                closed = [c for c in (first, second) if _wait_eof(c.sock, 0.1)]
            assert len(closed) == 1, "exactly one idle connection should have been closed to make room"
            kept = second if closed[0] is first else first
            assert kept.wait(kept.call(body=frame(place_request()))).trailers[b"grpc-status"] == b"0"
        finally:
            third.close()
    finally:
        first.close()
        second.close()


def test_max_connections_refuses_when_every_connection_is_busy(start_server):
    server = start_server("--max-connections", "2")
    first, second = H2Client(server.port), H2Client(server.port)
    try:
        busy = [(c, c.call(body=frame(place_request()), extra=[("x-sleep-ms", "2000")])) for c in (first, second)]
        time.sleep(0.3)  # both calls are in their handlers now
        third = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            try:
                third.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            except (ConnectionResetError, BrokenPipeError):
                pass
            assert _wait_eof(third, 5), "a connection over the limit was not closed while every other was busy"
        finally:
            third.close()
        for c, stream in busy:
            assert c.wait(stream).trailers[b"grpc-status"] == b"0"
    finally:
        first.close()
        second.close()


def test_client_trailers_are_accepted(client):
    stream = client.call(body=frame(place_request()), end_stream=False)
    client.conn.send_headers(stream, [(b"x-client-trailer", b"1")], end_stream=True)
    client.flush()
    r = client.wait(stream)
    assert r.trailers is not None and r.trailers[b"grpc-status"] == b"0", (r.events, r.headers)


def test_deadline_while_request_body_never_arrives(client):
    # The deadline runs from the request headers: a client that never sends its message still
    # gets DEADLINE_EXCEEDED instead of a stream held open forever.
    stream = client.headers(extra=[("grpc-timeout", "300m")])
    r = client.wait(stream, timeout=10)
    assert r.status == 4


def test_early_error_with_large_body_keeps_connection_usable(client):
    # UNIMPLEMENTED is answered on the headers; the 300 KB body that follows (several
    # flow-control windows) must be drained, not stall the connection.
    stream = client.call(path="/order_service.OrderService/Nope", body=frame(b"x" * 300_000))
    assert client.wait(stream).status == 12
    stream = client.call(body=frame(place_request()))
    assert client.wait(stream).trailers[b"grpc-status"] == b"0"


def test_reset_during_upload(client, server):
    stream = client.headers()
    client.data(stream, frame(b"x" * 50_000)[:20_000])
    client.conn.reset_stream(stream, error_code=8)
    client.flush()
    nxt = client.call(body=frame(place_request()))
    assert client.wait(nxt).trailers[b"grpc-status"] == b"0"
    assert_server_healthy(server)


def test_idle_timeout_closes_silent_tcp_connection(start_server):
    # A peer that connects and never sends a preface must not hold a connection slot forever.
    server = start_server("--idle-timeout-ms", "300")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        assert _wait_eof(sock, 4), "a silent connection was not closed by the idle timeout"
    finally:
        sock.close()
    assert_server_healthy(server)
