"""Streaming calls frame by frame: flow control as backpressure, and the wire shapes of streams.

Why: a streaming server must never buffer what a peer will not take. A client that stops reading
a huge response stream must hold the server's handler (not its memory), and a client that pushes
requests faster than the handler reads must find its window closed (not fill the server). grpcio
always reads and always respects windows, so these tests speak HTTP/2 themselves (the `h2`
package over a plain socket), watch the server's resident memory (/proc/PID/status VmRSS), and
check on another connection that the server keeps serving meanwhile. They also check what only
frames show: Trailers-Only for a streaming call that fails first (one HEADERS frame with
END_STREAM), response headers before the first message, and the concurrent-stream limit.
"""
import socket
import struct
import time
import uuid

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

from conftest import interop_streams_pb2 as spb, interop_streams_pb2_grpc as spb_grpc

COUNT = "/interop.streams.StreamTest/Count"
SUM = "/interop.streams.StreamTest/Sum"
CHAT = "/interop.streams.StreamTest/Chat"
MIB = 1024 * 1024
# The server's per-stream bound: its 64 KiB queue plus one message being written or assembled,
# plus the HTTP/2 window (64 KiB by default); what may be in flight beyond that is a bug.
STREAM_BOUND = 64 * 1024 + 65_541 + 65_535


def frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def new_tag():
    return f"raw-{uuid.uuid4().hex[:12]}"


class UnlimitedStreams(h2.connection.H2Connection):
    """An h2 connection that ignores the peer's MAX_CONCURRENT_STREAMS, to test the server's."""

    @property
    def open_outbound_streams(self):
        return 0


class Stream:
    def __init__(self):
        self.events = []
        self.headers = None
        self.trailers = None
        self.data = bytearray()
        self.received = 0        # DATA bytes, flow-controlled
        self.ended = False
        self.reset = None

    @property
    def fields(self):
        return self.trailers if self.trailers is not None else self.headers or {}

    @property
    def status(self):
        value = self.fields.get(b"grpc-status")
        return None if value is None else int(value)

    def messages(self):
        body, out = bytes(self.data), []
        while len(body) >= 5:
            flag, length = struct.unpack(">BI", body[:5])
            assert flag == 0
            out.append(body[5:5 + length])
            body = body[5 + length:]
        assert not body, "a partial message at the end of the stream"
        return out


class RawClient:
    """HTTP/2 by hand. With ack=False it never reopens its receive windows (a reader that stopped)."""

    def __init__(self, port, ack=True, unlimited_streams=False, keep_data=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = (UnlimitedStreams if unlimited_streams else h2.connection.H2Connection)(config=config)
        self.ack = ack
        self.keep_data = keep_data
        self.streams = {}
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def open(self, path, extra=(), end_stream=False):
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                  ("te", "trailers"), ("content-type", "application/grpc"), *extra]
        self.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in fields], end_stream=end_stream)
        self.flush()
        self.streams[sid] = Stream()
        return sid

    def send_now(self, sid, payload, end_stream=False):
        """Sends as much of payload as the windows allow right now; returns how many bytes."""
        window = min(self.conn.local_flow_control_window(sid), len(payload))
        sent = 0
        while sent < window:
            size = min(window - sent, self.conn.max_outbound_frame_size)
            self.conn.send_data(sid, payload[sent:sent + size])
            sent += size
        if end_stream and sent == len(payload):
            self.conn.end_stream(sid)
        self.flush()
        return sent

    def send_all(self, sid, payload, end_stream=False, timeout=10):
        offset, deadline = 0, time.monotonic() + timeout
        while offset < len(payload):
            offset += self.send_now(sid, payload[offset:])
            if offset < len(payload):
                assert time.monotonic() < deadline, "no flow-control credit"
                self.pump(0.05)
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout):
        """Reads what arrives within `timeout` seconds; False once the connection closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(10)
        if not data:
            return False
        for event in self.conn.receive_data(data):
            self._on(event)
        self.flush()
        return True

    def pump_for(self, seconds):
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.pump(min(left, 0.05)):
                return

    def _on(self, event):
        stream = self.streams.get(getattr(event, "stream_id", None))
        if stream is not None:
            stream.events.append(type(event).__name__)
        if isinstance(event, h2.events.ResponseReceived):
            stream.headers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream.received += event.flow_controlled_length
            if self.keep_data:
                stream.data += event.data
            if self.ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers = dict(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset = event.error_code

    def wait(self, sid, timeout=10):
        stream, deadline = self.streams[sid], time.monotonic() + timeout
        while not (stream.ended or stream.reset is not None):
            assert time.monotonic() < deadline, f"stream {sid} unfinished: {stream.events}"
            assert self.pump(0.1), "connection closed"
        return stream

    def reset(self, sid, code=h2.errors.ErrorCodes.CANCEL):
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def close(self):
        self.sock.close()


@pytest.fixture
def private(start_server):
    """A server of its own, so its memory reflects only this test."""
    return start_server()


@pytest.fixture
def raw(server):
    client = RawClient(server.port)
    yield client
    client.close()


def stub_for(server):
    channel = grpc.insecure_channel(server.address)
    return channel, spb_grpc.StreamTestStub(channel)


def stats(stub, tag):
    return stub.Stats(spb.StatsRequest(tag=tag), timeout=10)


def wait_ended(stub, tag, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (s := stats(stub, tag)).tag_running or not s.tag_seen:
        assert time.monotonic() < deadline, f"handler {tag} still runs: {s}"
        time.sleep(0.02)
    return s


def assert_served_meanwhile(stub):
    """A unary call and a whole stream, on another connection."""
    assert stub.Echo(spb.Item(sequence=3), timeout=5).sequence == 3
    assert len(list(stub.Count(spb.CountRequest(count=1000, payload_bytes=100), timeout=5))) == 1000


# ---------------------------------------------------------------- a reader that stopped

def test_huge_response_to_a_stalled_reader_costs_no_memory(private):
    # 16384 x 64 KiB = 1 GiB asked for; the client never reopens its windows.
    channel, stub = stub_for(private)
    tag = new_tag()
    client = RawClient(private.port, ack=False, keep_data=False)
    try:
        assert_served_meanwhile(stub)  # warm: the baseline includes a served stream
        before = rss_kib(private.proc.pid)
        sid = client.open(COUNT, extra=[("x-tag", tag)])
        client.send_all(sid, frame(spb.CountRequest(count=16384, payload_bytes=65536).SerializeToString()),
                        end_stream=True)
        stream = client.streams[sid]
        deadline = time.monotonic() + 5
        while stream.received < 65_535:  # h2's default window: all the server may send
            assert time.monotonic() < deadline, f"only {stream.received} bytes arrived"
            assert client.pump(0.05)
        client.pump_for(0.3)
        assert stream.headers is not None and stream.headers[b":status"] == b"200"
        assert stream.received == 65_535, stream.received  # exactly what our window allowed
        first = stats(stub, tag)
        assert first.tag_running
        client.pump_for(1.5)
        second = stats(stub, tag)
        # The handler is held: it wrote the window's worth and the stream's small queue, no more.
        assert second.tag_running and second.tag_sent == first.tag_sent, (first, second)
        assert second.tag_sent * 65_541 <= STREAM_BOUND + 65_541, second
        assert_served_meanwhile(stub)
        grown = rss_kib(private.proc.pid) - before
        assert grown < 20 * 1024, f"RSS grew {grown} KiB while a reader stalled"

        # The reader resumes: the stream flows again, in order, until the client has had enough.
        client.conn.increment_flow_control_window(32 * MIB)
        client.conn.increment_flow_control_window(32 * MIB, stream_id=sid)
        client.flush()
        deadline = time.monotonic() + 20
        while stream.received < 32 * MIB and stream.reset is None:
            assert time.monotonic() < deadline, f"only {stream.received} bytes in 20 s"
            assert client.pump(0.2)
        assert stats(stub, tag).tag_sent > second.tag_sent + 400
        client.reset(sid)
        ended = wait_ended(stub, tag)
        assert ended.tag_outcome == "CANCELLED" and ended.tag_sent < 16384
        grown = rss_kib(private.proc.pid) - before
        assert grown < 20 * 1024, f"RSS grew {grown} KiB"
        assert_served_meanwhile(stub)
    finally:
        client.close()
        channel.close()


def test_stalled_reader_does_not_block_its_other_streams(private):
    # One stream of the connection stalls (window closed); another on the same connection, whose
    # window the client does reopen, still completes: the connection window is not held hostage.
    channel, stub = stub_for(private)
    client = RawClient(private.port, ack=False)
    try:
        stalled = client.open(COUNT)
        client.send_all(stalled, frame(spb.CountRequest(count=16384, payload_bytes=65536).SerializeToString()),
                        end_stream=True)
        client.pump_for(0.3)
        # The connection window is what the stalled stream took from h2's 64 KiB default: give the
        # connection (only) plenty, and the second stream its own window as it reads.
        client.conn.increment_flow_control_window(8 * MIB)
        client.flush()
        client.ack = True
        other = client.open(COUNT)
        client.send_all(other, frame(spb.CountRequest(count=50, payload_bytes=10_000).SerializeToString()),
                        end_stream=True)
        # Acknowledging the stalled stream's data would reopen it too: ack only `other`.
        ack_other = client._on

        def on(event):
            if isinstance(event, h2.events.DataReceived) and event.stream_id == stalled:
                client.streams[stalled].received += event.flow_controlled_length
                client.streams[stalled].events.append("DataReceived")
                return
            ack_other(event)

        client._on = on
        response = client.wait(other, timeout=10)
        assert response.status == 0 and len(response.messages()) == 50
        assert client.streams[stalled].received <= 65_535
        client.reset(stalled)
        assert_served_meanwhile(stub)
    finally:
        client.close()
        channel.close()


# ---------------------------------------------------------------- a writer faster than the handler

@pytest.mark.parametrize("path", [SUM, CHAT], ids=["client-streaming", "bidi"])
def test_request_window_held_back_while_handler_does_not_read(private, path):
    channel, stub = stub_for(private)
    tag = new_tag()
    client = RawClient(private.port)
    try:
        before = rss_kib(private.proc.pid)
        # The handler sleeps 5 s before taking its first message; the client pushes 64 KiB
        # messages as fast as its window lets it.
        sid = client.open(path, extra=[("x-read-delay-ms", "5000"), ("x-tag", tag)])
        message = frame(spb.Item(sequence=1, payload=b"m" * 65_536).SerializeToString())
        pending, sent = b"", 0
        stop = time.monotonic() + 1.5
        last_progress = time.monotonic()
        while time.monotonic() < stop:
            if not pending:
                pending = message
            n = client.send_now(sid, pending)
            pending = pending[n:]
            sent += n
            if n:
                last_progress = time.monotonic()
            else:
                client.pump(0.05)
        assert client.conn.local_flow_control_window(sid) == 0, "the window never closed"
        assert time.monotonic() - last_progress > 0.5, "the server kept reopening the window"
        assert sent <= STREAM_BOUND + 65_541, f"{sent} bytes were let in for a handler that read nothing"
        s = stats(stub, tag)
        assert s.tag_running and s.tag_received == 0
        assert_served_meanwhile(stub)
        grown = rss_kib(private.proc.pid) - before
        assert grown < 20 * 1024, f"RSS grew {grown} KiB"
        client.reset(sid)
        assert wait_ended(stub, tag).tag_outcome == "CANCELLED"
    finally:
        client.close()
        channel.close()


@pytest.mark.parametrize("path", [SUM, CHAT], ids=["client-streaming", "bidi"])
def test_fast_writer_is_paced_by_a_slow_handler(private, path):
    # The handler takes one message every 20 ms; whatever the client sent beyond what it took
    # stays within the stream's bound, and the call completes with everything counted.
    channel, stub = stub_for(private)
    tag = new_tag()
    client = RawClient(private.port)
    try:
        sid = client.open(path, extra=[("x-read-delay-ms", "20"), ("x-tag", tag)])
        size = 16_384
        message = frame(spb.Item(sequence=1, payload=b"s" * size).SerializeToString())
        pending, sent_messages, max_ahead = b"", 0, 0
        stop = time.monotonic() + 1.0
        while time.monotonic() < stop:
            if not pending:
                pending = message
            n = client.send_now(sid, pending)
            pending = pending[n:]
            if n and not pending:
                sent_messages += 1
            if not n:
                client.pump(0.02)
                taken = stats(stub, tag).tag_received
                max_ahead = max(max_ahead, (sent_messages - taken) * len(message))
        client.send_all(sid, pending, end_stream=True)
        assert max_ahead <= STREAM_BOUND + 2 * len(message), max_ahead
        response = client.wait(sid, timeout=20)
        assert response.status == 0, response.fields
        taken = stats(stub, tag).tag_received
        assert taken == sent_messages + (1 if pending else 0) or taken == sent_messages
        assert sent_messages < 200, f"{sent_messages} messages in 1 s for a handler that reads 50/s"
        if path == SUM:
            total = spb.Total.FromString(response.messages()[0])
            assert total.count == taken
        else:
            assert len(response.messages()) == taken
    finally:
        client.close()
        channel.close()


# ---------------------------------------------------------------- wire shapes of streams

def test_streaming_error_before_first_message_is_trailers_only(raw):
    sid = raw.open(COUNT)
    raw.send_all(sid, frame(spb.CountRequest(count=5, fail_code=5, fail_message="nothing").SerializeToString()),
                 end_stream=True)
    r = raw.wait(sid)
    # One HEADERS frame with END_STREAM: ResponseReceived immediately followed by StreamEnded.
    assert r.events == ["ResponseReceived", "StreamEnded"], r.events
    assert r.headers[b":status"] == b"200"
    assert r.headers[b"content-type"].startswith(b"application/grpc")
    assert r.headers[b"grpc-status"] == b"5" and r.headers[b"grpc-message"] == b"nothing"


@pytest.mark.parametrize("path", [SUM, CHAT], ids=["client-streaming", "bidi"])
def test_client_streaming_error_before_first_message_is_trailers_only(raw, path):
    sid = raw.open(path, extra=[("x-fail-after", "0"), ("x-fail-code", "7"), ("x-fail-message", "denied")])
    r = raw.wait(sid)  # answered on the headers alone, while the request is still open
    assert r.events[:2] == ["ResponseReceived", "StreamEnded"], r.events
    assert r.headers[b"grpc-status"] == b"7" and r.headers[b"grpc-message"] == b"denied"
    assert r.data == b""


def test_streaming_error_after_messages_has_trailers(raw):
    sid = raw.open(COUNT)
    raw.send_all(sid, frame(spb.CountRequest(count=5, fail_after=2, fail_code=9).SerializeToString()), end_stream=True)
    r = raw.wait(sid)
    assert r.events[0] == "ResponseReceived" and r.events[-2:] == ["TrailersReceived", "StreamEnded"], r.events
    assert b"grpc-status" not in r.headers
    assert r.trailers[b"grpc-status"] == b"9"
    assert [spb.Item.FromString(m).sequence for m in r.messages()] == [0, 1]


def test_response_headers_arrive_before_the_first_message(raw):
    sid = raw.open(COUNT, extra=[("x-echo-stage", "headers")])
    raw.send_all(sid, frame(spb.CountRequest(count=3, delay_ms=300).SerializeToString()), end_stream=True)
    # Nothing is due for 300 ms: no premature DATA or trailers.
    raw.pump_for(0.15)
    assert "DataReceived" not in raw.streams[sid].events
    r = raw.wait(sid)
    assert r.events[0] == "ResponseReceived"
    assert r.events.index("ResponseReceived") < r.events.index("DataReceived") < r.events.index("TrailersReceived")
    assert r.headers[b"x-echo-stage"] == b"headers" and b"grpc-status" not in r.headers
    assert r.trailers[b"grpc-status"] == b"0" and r.trailers[b"x-echo-stage"] == b"headers"
    assert len(r.messages()) == 3


def test_bidi_echo_arrives_before_the_client_half_closes(raw):
    sid = raw.open(CHAT)
    sent = 0
    for i in range(3):
        message = frame(spb.Item(sequence=i, payload=b"e").SerializeToString())
        sent += len(message)
        raw.send_all(sid, message)
        deadline = time.monotonic() + 5
        while len(raw.streams[sid].data) < sent:
            assert time.monotonic() < deadline, f"no echo of message {i} before the half-close"
            raw.pump(0.05)
    raw.send_all(sid, b"", end_stream=True)
    r = raw.wait(sid)
    assert r.status == 0
    assert [spb.Item.FromString(m).sequence for m in r.messages()] == [0, 1, 2]


def test_server_resets_a_client_still_sending_after_the_response(raw, server):
    # Chat ends after 1 echo while the request stays open: the response ends, then RST_STREAM
    # NO_ERROR (RFC 9113 8.1) tells the client to stop sending.
    sid = raw.open(CHAT, extra=[("x-end-after", "1")])
    raw.send_all(sid, frame(spb.Item(sequence=0).SerializeToString()))
    r = raw.wait(sid)
    raw.pump_for(0.2)
    assert r.status == 0 and len(r.messages()) == 1
    assert r.reset in (None, h2.errors.ErrorCodes.NO_ERROR), r.reset
    channel, stub = stub_for(server)
    with channel:
        assert_served_meanwhile(stub)


def test_concurrent_stream_limit_is_enforced(start_server):
    # The server advertises 256 streams per connection and serves no more. A client that opens
    # a 257th anyway is refused: RFC 9113 5.1.2 asks for a stream error (RST_STREAM
    # REFUSED_STREAM or PROTOCOL_ERROR); libnghttp2 1.52 makes it a connection error instead
    # (GOAWAY PROTOCOL_ERROR "max concurrent streams exceeded"), which ends that client's
    # connection. Either way the extra stream is not served and other connections are unaffected.
    # (grpcio respects the limit and queues: test_streaming.py opens 300 streams on one channel.)
    server = start_server()
    client = RawClient(server.port, unlimited_streams=True)
    channel, stub = stub_for(server)
    try:
        client.pump_for(0.2)
        assert client.conn.remote_settings.max_concurrent_streams == 256
        # Bidi calls stay open until the client half-closes: fill every slot.
        open_ids = [client.open(CHAT) for _ in range(256)]
        client.pump_for(0.2)
        assert all(client.streams[s].reset is None for s in open_ids)
        # While all 256 are open, each still works: an echo on the last one.
        echo = frame(spb.Item(sequence=5).SerializeToString())
        client.send_all(open_ids[-1], echo)
        deadline = time.monotonic() + 5
        while len(client.streams[open_ids[-1]].data) < len(echo):
            assert time.monotonic() < deadline, "no echo on the 256th stream"
            client.pump(0.05)
        goaway = []
        on = client._on
        client._on = lambda event: (goaway.append(event) if isinstance(event, h2.events.ConnectionTerminated) else None,
                                    on(event))
        extra = client.open(CHAT)
        try:
            client.pump_for(0.5)
        except (ConnectionResetError, BrokenPipeError):
            pass
        refused = client.streams[extra].reset in (h2.errors.ErrorCodes.REFUSED_STREAM, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        closed = bool(goaway) and goaway[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert refused or closed, (client.streams[extra].events, goaway)
        assert client.streams[extra].headers is None, "the stream over the limit was served"
        if closed:
            assert goaway[0].last_stream_id < extra
        assert_served_meanwhile(stub)
    finally:
        client.close()
        channel.close()
