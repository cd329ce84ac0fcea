// The HTTP/2 plumbing that the server and the client share: one socket, one nghttp2 session, all
// on one event loop thread (nghttp2's own examples drive a session the same way).
//
// Reading: bytes from the socket go straight into `nghttp2_session_mem_recv`, whose callbacks
// reach the subclass through the overridable `did…` methods. Writing: `nghttp2_session_mem_send`
// hands out one frame at a time; the frames are gathered into a batch (up to 64 KiB) and written
// with one `send`, so a response's HEADERS, DATA and trailers, and the responses of every call
// answered in the same loop round, cost one system call instead of one each. Only what the
// socket refuses is kept in `pendingOutput`, and while anything is pending the connection stops
// reading. That is the backpressure: a peer that does not read its responses stops being served,
// and the memory a connection holds stays bounded by one batch plus its open streams. The read
// buffer and the batch are the loop's (`LoopBuffers`), shared by all its connections, so an idle
// connection holds no I/O buffer at all.
//
// A unary body is handed to nghttp2 through a data provider that reads from `outgoingBodies`;
// when a body carries trailers (gRPC's status), the provider ends DATA without END_STREAM and
// submits them as a trailing HEADERS frame. A streaming body is a `StreamOutbound` in
// `streamingBodies`, read by a second provider that defers while the queue is empty and is
// resumed when the task writes again.
//
// Flow control is ours, not nghttp2's automatic one: received DATA is consumed at once for the
// connection window (one slow stream never stalls the others) and, per stream, by the subclass:
// at once for unary calls, and only as the task takes its messages for streaming ones
// (`consumeStream`), which is what makes a fast sender wait instead of filling our memory.
//
// Callbacks never close the connection themselves: they mark it, and the I/O path closes it once
// nghttp2 has returned, so the session is never freed under its own feet.
//
// TLS (TLS.swift) slots in under the same path: with a `TLSSession`, the handshake runs first
// (its WANT_READ/WANT_WRITE set the epoll interest; nothing of HTTP/2 is sent before it is done,
// and ALPN must have agreed on h2), then reads and writes go through SSL_read/SSL_write instead
// of the socket: one SSL_write per batch, exactly as one send per batch without TLS. OpenSSL may
// hold input that epoll cannot see (read-ahead), so after a read the connection looks again
// before the loop waits. h2c pays one nil check per read and per write for all this.
import CNGHTTP2
import EventLoop
#if canImport(Glibc)
import Glibc
#endif

/// The I/O buffers of one event loop, shared by all its connections: only one connection reads
/// or writes at a time on a loop, and none keeps a buffer between its turns.
final class LoopBuffers {
    /// Frames gathered into one `send` at most.
    static let batchSize = 64 * 1024
    let read: UnsafeMutableRawBufferPointer
    var write: [UInt8] = []

    init() {
        read = .allocate(byteCount: 64 * 1024, alignment: 16)
        write.reserveCapacity(Self.batchSize + 16 * 1024)
    }

    deinit { read.deallocate() }
}

/// One header field to submit.
typealias HeaderField = (name: String, value: String)

/// One gRPC message queued for sending as DATA, with the trailers that end its stream (nil:
/// END_STREAM on DATA). The length prefix is written as the bytes are read, so the message is
/// never copied into a framed array first.
struct OutgoingBody {
    let message: [UInt8]
    var trailers: [HeaderField]?
    private let prefix: [UInt8]
    private var offset = 0

    init(message: [UInt8], trailers: [HeaderField]? = nil) {
        self.message = message
        self.trailers = trailers
        prefix = MessageFraming.prefix(for: message.count)
    }

    var isFinished: Bool { offset == prefix.count + message.count }

    /// Copies the next framed bytes, at most `capacity`, to `destination`; returns how many.
    mutating func read(into destination: UnsafeMutableRawPointer, capacity: Int) -> Int {
        var copied = 0
        // `offset` counts framed bytes: the prefix's first, then the message's.
        func copy(from part: [UInt8], startingAt start: Int) {
            guard start < part.count, copied < capacity else { return }
            let count = min(capacity - copied, part.count - start)
            part.withUnsafeBytes { destination.advanced(by: copied).copyMemory(from: $0.baseAddress! + start, byteCount: count) }
            copied += count
        }
        if offset < prefix.count { copy(from: prefix, startingAt: offset) }
        copy(from: message, startingAt: offset + copied - prefix.count)
        offset += copied
        return copied
    }
}

class HTTP2Connection: IOHandler {
    let loop: EventLoop
    let fd: Int32
    private(set) var session: OpaquePointer?
    private var pendingOutput: [UInt8] = []
    private var watching: IOEvents = []
    private let buffers: LoopBuffers
    /// Set by callbacks or the subclass to ask for the connection to close once I/O returns.
    var closeRequested = false
    private(set) var isClosed = false
    /// True while nghttp2 is parsing input: frames may be submitted then, but not sent
    /// (nghttp2 forbids mem_send from its callbacks); `readAvailable` flushes afterwards.
    private var processingInput = false
    private var flushScheduled = false
    var outgoingBodies: [Int32: OutgoingBody] = [:]
    var streamingBodies: [Int32: StreamOutbound] = [:]
    /// TLS on this connection; nil for h2c.
    let tls: TLSSession?
    /// Why the connection closed, when it was not simply the peer hanging up (TLS failures).
    var closeReason: String?
    /// Set on every read that brought bytes; the server's keepalive clears it when it looks.
    var receivedBytes = false
    private var readScheduled = false

    init(loop: EventLoop, fd: Int32, buffers: LoopBuffers, server: Bool, tls: TLSSession? = nil,
         settings: [(nghttp2_settings_id, UInt32)]) {
        self.loop = loop
        self.fd = fd
        self.buffers = buffers
        self.tls = tls
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        Self.installCallbacks(callbacks)
        var options: OpaquePointer?
        nghttp2_option_new(&options)
        // Let nghttp2 refuse a flood of unanswered control frames (PING/SETTINGS) on its own.
        nghttp2_option_set_max_outbound_ack(options, 1000)
        nghttp2_option_set_no_auto_window_update(options, 1)
        let user = Unmanaged.passUnretained(self).toOpaque()
        var created: OpaquePointer?
        if server {
            nghttp2_session_server_new2(&created, callbacks, user, options)
        } else {
            nghttp2_session_client_new2(&created, callbacks, user, options)
        }
        nghttp2_option_del(options)
        nghttp2_session_callbacks_del(callbacks)
        session = created
        let entries = settings.map { nghttp2_settings_entry(settings_id: Int32($0.0.rawValue), value: $0.1) }
        nghttp2_submit_settings(created, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count)
        // A connection window well above one stream's, so that streams sharing the connection
        // do not wait on each other's WINDOW_UPDATE round trips.
        nghttp2_session_set_local_window_size(created, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Self.connectionWindow)
    }

    /// The receive window of the whole connection.
    static let connectionWindow: Int32 = 1 << 20

    deinit {
        if let session { nghttp2_session_del(session) }
    }

    /// Starts watching the socket. Call once, on the loop. A client whose connect is still in
    /// progress watches for writability first and calls `beginTransport()` once connected.
    func start(awaitingConnect: Bool = false) {
        watching = awaitingConnect ? .write : .read
        loop.register(fd, for: watching, handler: self)
        if !awaitingConnect { beginTransport() }
    }

    /// The socket is connected: start the TLS handshake, or HTTP/2 at once (our SETTINGS).
    func beginTransport() {
        if tls != nil {
            continueHandshake()
        } else {
            flush()
        }
    }

    /// Whether HTTP/2 may run: no TLS, or its handshake is done.
    var transportEstablished: Bool { tls?.established ?? true }

    // MARK: - Overridden by the server and the client

    func didBeginHeaders(stream: Int32) {}
    /// Returns false to reset the stream (the header was refused).
    func didReceiveHeader(stream: Int32, name: String, value: String) -> Bool { true }
    func didReceiveHeaders(stream: Int32, endStream: Bool) {}
    func didReceiveData(stream: Int32, bytes: UnsafeRawBufferPointer) {}
    func didReceiveEndOfData(stream: Int32) {}
    func didReceiveGoAway(lastStreamID: Int32) {}
    /// This side's END_STREAM went out on `stream` (the last DATA or the trailers).
    func didSendEndOfStream(stream: Int32) {}
    func streamDidClose(stream: Int32, errorCode: UInt32) {}
    func connectionDidClose() {}
    /// The peer's first SETTINGS frame arrived (after its preface, on the server).
    func didReceiveSettings() {}
    /// A PING arrived (nghttp2 has answered it) or, with `ack`, the answer to ours.
    func didReceivePing(ack: Bool) {}
    /// The TLS handshake is done and h2 agreed; HTTP/2 starts right after this returns.
    func tlsHandshakeDidComplete() {}

    // MARK: - I/O

    func handleIO(_ events: IOEvents) {
        if let tls, !tls.established {
            continueHandshake()
            return
        }
        if events.contains(.write) || (tls?.writeWantsRead == true && events.contains(.read)) { flush() }
        guard !isClosed else { return }
        if !events.isDisjoint(with: .hangup), !pendingOutput.isEmpty {
            // The peer hung up with our output unread: nothing will drain it, and a level-triggered
            // hang-up would wake this loop for ever.
            close()
            return
        }
        if events.contains(.read) || !events.isDisjoint(with: .hangup)
            || (tls?.readWantsWrite == true && events.contains(.write)) {
            readAvailable()
        }
    }

    /// Drives the TLS handshake one step; once done (h2 agreed), HTTP/2 begins: our SETTINGS go
    /// out and whatever the peer sent along with its last handshake flight is read.
    private func continueHandshake() {
        guard let tls, !isClosed else { return }
        switch tls.handshake() {
        case .wantRead:
            setInterest(.read)
        case .wantWrite:
            setInterest(.write)
        case .failed(let reason):
            closeReason = "TLS handshake failed: \(reason)"
            close()
        case .done:
            guard tls.negotiatedProtocol == "h2" else {
                closeReason = "TLS handshake failed: the peer did not negotiate h2 (ALPN)"
                close()
                return
            }
            tlsHandshakeDidComplete()
            guard !isClosed else { return }
            setInterest(.read)
            readAvailable()
        }
    }

    private func setInterest(_ wanted: IOEvents) {
        if wanted != watching {
            watching = wanted
            loop.modify(fd, for: wanted)
        }
    }

    private func transportRead() -> IOResult {
        guard let tls else { return Socket.read(fd, into: buffers.read) }
        return tls.read(into: buffers.read)
    }

    private func transportWrite(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        guard let tls else { return Socket.write(fd, from: bytes) }
        return tls.write(from: bytes)
    }

    /// Closes after a failed read or write, keeping TLS's reason.
    private func closeAfterFailure() {
        if closeReason == nil, let failure = tls?.failure { closeReason = failure }
        close()
    }

    /// Reads again before the loop waits: OpenSSL holds input that epoll will not report.
    private func scheduleRead() {
        guard !readScheduled else { return }
        readScheduled = true
        loop.runBeforeWaiting { [weak self] in
            guard let self else { return }
            self.readScheduled = false
            if !self.isClosed { self.readAvailable() }
        }
    }

    private func readAvailable() {
        // A bounded number of reads per wake-up keeps one busy peer from starving the others.
        for _ in 0..<8 {
            guard !isClosed, pendingOutput.isEmpty else { break }
            switch transportRead() {
            case .transferred(let count):
                receivedBytes = true
                processingInput = true
                let consumed = nghttp2_session_mem_recv(session, buffers.read.baseAddress!.assumingMemoryBound(to: UInt8.self), count)
                processingInput = false
                if consumed < 0 {
                    // A protocol error (bad preface, garbage): nghttp2 has queued a GOAWAY; send it, then close.
                    closeRequested = true
                }
            case .wouldBlock:
                flush()
                return
            case .closed, .failed:
                closeAfterFailure()
                return
            }
            if closeRequested { break }
        }
        flush()
    }

    /// Asks for a `flush` at the end of the loop's round, so frames submitted for many streams in
    /// one round leave in one write.
    func scheduleFlush() {
        guard !flushScheduled, !isClosed else { return }
        flushScheduled = true
        loop.runBeforeWaiting { [weak self] in
            guard let self else { return }
            self.flushScheduled = false
            self.flush()
        }
    }

    /// Writes what nghttp2 has to send; closes when the session is done or a close was asked for.
    func flush() {
        guard !isClosed, !processingInput, transportEstablished else { return }
        if !pendingOutput.isEmpty {
            guard writePending() else { return }
        }
        while pendingOutput.isEmpty, nghttp2_session_want_write(session) != 0 {
            // Gather frames into the loop's batch, then send them with one system call.
            buffers.write.removeAll(keepingCapacity: true)
            while buffers.write.count < LoopBuffers.batchSize, nghttp2_session_want_write(session) != 0 {
                var chunk: UnsafePointer<UInt8>?
                let length = nghttp2_session_mem_send(session, &chunk)
                if length < 0 { close(); return }
                if length == 0 { break }
                buffers.write.append(contentsOf: UnsafeRawBufferPointer(start: chunk, count: length))
            }
            if buffers.write.isEmpty { break }
            switch buffers.write.withUnsafeBytes({ transportWrite($0) }) {
            case .transferred(let written):
                if written < buffers.write.count { pendingOutput = Array(buffers.write[written...]) }
            case .wouldBlock:
                // With TLS, OpenSSL keeps what it already encrypted and wants the same bytes again.
                pendingOutput = buffers.write
            case .closed, .failed:
                closeAfterFailure()
                return
            }
        }
        let done = nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0
        if pendingOutput.isEmpty && (closeRequested || done) {
            close()
            return
        }
        updateInterest()
    }

    /// Returns true when everything pending went out.
    private func writePending() -> Bool {
        let result = pendingOutput.withUnsafeBytes { transportWrite($0) }
        switch result {
        case .transferred(let written):
            pendingOutput.removeFirst(written)
        case .wouldBlock:
            break
        case .closed, .failed:
            closeAfterFailure()
            return false
        }
        updateInterest()
        return pendingOutput.isEmpty
    }

    private func updateInterest() {
        var wanted: IOEvents = pendingOutput.isEmpty ? .read : .write
        if let tls {
            if tls.readWantsWrite { wanted.insert(.write) }
            if tls.writeWantsRead { wanted.insert(.read) }
            if pendingOutput.isEmpty, !closeRequested, tls.hasPendingInput { scheduleRead() }
        }
        setInterest(wanted)
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        tls?.close()
        loop.deregister(fd)
        Socket.close(fd)
        outgoingBodies.removeAll()
        streamingBodies.removeAll()
        pendingOutput = []
        connectionDidClose()
        // The session goes last: connectionDidClose may still look at stream state, never at nghttp2.
        if let session { nghttp2_session_del(session) }
        session = nil
    }

    // MARK: - Submitting frames

    /// Submits a HEADERS frame, with `body` (and its trailers) to follow, or END_STREAM if nil.
    func submitResponse(stream: Int32, headers: [HeaderField], body: OutgoingBody?) {
        guard let session else { return }
        HeaderBlock(headers).withNV { nv, count in
            if let body {
                outgoingBodies[stream] = body
                var provider = Self.bodyProvider
                _ = nghttp2_submit_response(session, stream, nv, count, &provider)
            } else {
                _ = nghttp2_submit_response(session, stream, nv, count, nil)
            }
        }
    }

    /// Submits a request; returns its stream id, or a negative nghttp2 error.
    func submitRequest(headers: [HeaderField], body: OutgoingBody) -> Int32 {
        guard let session else { return -1 }
        return HeaderBlock(headers).withNV { nv, count in
            var provider = Self.bodyProvider
            let stream = nghttp2_submit_request(session, nil, nv, count, &provider, nil)
            if stream > 0 { outgoingBodies[stream] = body }
            return stream
        }
    }

    /// Submits HEADERS with a streaming body to follow from `body`.
    func submitStreamingResponse(stream: Int32, headers: [HeaderField], body: StreamOutbound) {
        guard let session else { return }
        HeaderBlock(headers).withNV { nv, count in
            streamingBodies[stream] = body
            var provider = Self.streamingProvider
            _ = nghttp2_submit_response(session, stream, nv, count, &provider)
        }
    }

    /// Submits a request whose body follows from `body`; returns its stream id, or a negative
    /// nghttp2 error.
    func submitStreamingRequest(headers: [HeaderField], body: StreamOutbound) -> Int32 {
        guard let session else { return -1 }
        return HeaderBlock(headers).withNV { nv, count in
            var provider = Self.streamingProvider
            let stream = nghttp2_submit_request(session, nil, nv, count, &provider, nil)
            if stream > 0 { streamingBodies[stream] = body }
            return stream
        }
    }

    /// The task queued more for a streaming body whose provider had deferred.
    func resumeBody(stream: Int32) {
        guard let session, streamingBodies[stream] != nil else { return }
        _ = nghttp2_session_resume_data(session, stream)
        scheduleFlush()
    }

    /// Whether the peer has finished sending on `stream` (its END_STREAM arrived).
    func peerFinishedSending(stream: Int32) -> Bool {
        guard let session else { return true }
        return nghttp2_session_get_stream_remote_close(session, stream) != 0
    }

    /// Whether this side has finished sending on `stream` (its END_STREAM went out).
    func finishedSending(stream: Int32) -> Bool {
        guard let session else { return true }
        return nghttp2_session_get_stream_local_close(session, stream) != 0
    }

    /// Tells nghttp2 that `count` received bytes of `stream` were taken: its window reopens.
    func consumeStream(_ stream: Int32, _ count: Int) {
        guard let session, count > 0 else { return }
        _ = nghttp2_session_consume_stream(session, stream, count)
    }

    func submitReset(stream: Int32, errorCode: nghttp2_error_code) {
        guard let session else { return }
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, errorCode.rawValue)
    }

    /// The first step of a graceful shutdown: GOAWAY with the largest stream id.
    func submitShutdownNotice() {
        guard let session else { return }
        nghttp2_submit_shutdown_notice(session)
    }

    /// True once the final GOAWAY is queued.
    private(set) var goAwaySent = false

    /// Sends GOAWAY naming the last stream this side processed: streams after it were not.
    func submitGoAway(errorCode: nghttp2_error_code = NGHTTP2_NO_ERROR, debugData: String = "") {
        guard let session else { return }
        goAwaySent = true
        let last = nghttp2_session_get_last_proc_stream_id(session)
        let debug = Array(debugData.utf8)
        debug.withUnsafeBufferPointer {
            _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode.rawValue, $0.baseAddress, $0.count)
        }
    }

    /// Sends a PING; the answer comes back as `didReceivePing(ack: true)`.
    func submitPing() {
        guard let session else { return }
        _ = nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
    }

    // MARK: - nghttp2 callbacks (nonisolated C functions: they find the connection in user_data)

    private static func connection(_ user: UnsafeMutableRawPointer?) -> HTTP2Connection {
        Unmanaged<HTTP2Connection>.fromOpaque(user!).takeUnretainedValue()
    }

    private static let bodyProvider = nghttp2_data_provider(
        source: nghttp2_data_source(fd: 0),
        read_callback: { _, stream, buffer, length, flags, _, user -> Int in
            let connection = HTTP2Connection.connection(user)
            guard var body = connection.outgoingBodies[stream] else {
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                return 0
            }
            let count = body.read(into: UnsafeMutableRawPointer(buffer!), capacity: length)
            if !body.isFinished {
                connection.outgoingBodies[stream] = body
                return count
            }
            connection.outgoingBodies[stream] = nil
            flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            if let trailers = body.trailers {
                flags!.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                HeaderBlock(trailers).withNV { nv, nvCount in
                    _ = nghttp2_submit_trailer(connection.session, stream, nv, nvCount)
                }
            }
            return count
        })

    private static let streamingProvider = nghttp2_data_provider(
        source: nghttp2_data_source(fd: 0),
        read_callback: { _, stream, buffer, length, flags, _, user -> Int in
            let connection = HTTP2Connection.connection(user)
            guard let body = connection.streamingBodies[stream] else {
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                return 0
            }
            switch body.read(into: UnsafeMutableRawPointer(buffer!), capacity: length) {
            case .data(let count):
                return count
            case .empty:
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            case .ended(let count, let end):
                connection.streamingBodies[stream] = nil
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                if case .trailers(let trailers) = end {
                    flags!.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                    HeaderBlock(trailers).withNV { nv, nvCount in
                        _ = nghttp2_submit_trailer(connection.session, stream, nv, nvCount)
                    }
                }
                return count
            }
        })

    private static func installCallbacks(_ callbacks: OpaquePointer?) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, user in
            if frame!.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) {
                HTTP2Connection.connection(user).didBeginHeaders(stream: frame!.pointee.hd.stream_id)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, user in
            let nameText = String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self)
            let valueText = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
            let accepted = HTTP2Connection.connection(user).didReceiveHeader(
                stream: frame!.pointee.hd.stream_id, name: nameText, value: valueText)
            return accepted ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, user in
            let connection = HTTP2Connection.connection(user)
            let header = frame!.pointee.hd
            let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch Int(header.type) {
            case Int(NGHTTP2_HEADERS.rawValue):
                connection.didReceiveHeaders(stream: header.stream_id, endStream: endStream)
            case Int(NGHTTP2_DATA.rawValue) where endStream:
                connection.didReceiveEndOfData(stream: header.stream_id)
            case Int(NGHTTP2_GOAWAY.rawValue):
                connection.didReceiveGoAway(lastStreamID: frame!.pointee.goaway.last_stream_id)
            case Int(NGHTTP2_SETTINGS.rawValue) where header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0:
                connection.didReceiveSettings()
            case Int(NGHTTP2_PING.rawValue):
                connection.didReceivePing(ack: header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0)
            default:
                break
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, user in
            let header = frame!.pointee.hd
            let isStreamFrame = header.type == UInt8(NGHTTP2_HEADERS.rawValue) || header.type == UInt8(NGHTTP2_DATA.rawValue)
            if isStreamFrame, header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 {
                HTTP2Connection.connection(user).didSendEndOfStream(stream: header.stream_id)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { session, _, stream, data, length, user in
            // The connection window reopens at once; the stream's is the subclass's to reopen.
            nghttp2_session_consume_connection(session, length)
            HTTP2Connection.connection(user).didReceiveData(stream: stream, bytes: UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, stream, errorCode, user in
            let connection = HTTP2Connection.connection(user)
            connection.outgoingBodies[stream] = nil
            connection.streamingBodies[stream] = nil
            connection.streamDidClose(stream: stream, errorCode: errorCode)
            return 0
        }
    }
}

/// Header fields laid out in one buffer so nghttp2 gets stable pointers for the submit call
/// (it copies them, so they only need to live that long).
struct HeaderBlock {
    private var bytes: [UInt8] = []
    private var spans: [(name: Range<Int>, value: Range<Int>)] = []

    init(_ fields: [HeaderField]) {
        for field in fields {
            let nameStart = bytes.count
            bytes.append(contentsOf: field.name.utf8)
            let valueStart = bytes.count
            bytes.append(contentsOf: field.value.utf8)
            spans.append((nameStart..<valueStart, valueStart..<bytes.count))
        }
    }

    func withNV<T>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> T) -> T {
        var storage = bytes
        if storage.isEmpty { storage.append(0) }
        return storage.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            let nv = spans.map { span in
                nghttp2_nv(name: base + span.name.lowerBound, value: base + span.value.lowerBound,
                           namelen: span.name.count, valuelen: span.value.count,
                           flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return nv.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
        }
    }
}
