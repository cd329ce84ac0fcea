// One accepted HTTP/2 connection of the gRPC server, on its loop thread.
//
// Each request stream walks: headers (validated as the spec asks: POST, application/grpc, a known
// path) -> DATA assembled into length-prefixed messages (size limit checked on the prefix, per
// message) -> the route's async handler runs in its own Task, started on this thread (one that
// never suspends answers at once; one that awaits hands its result back with `execute`) -> the
// result goes out as HEADERS, DATA and trailers, or as Trailers-Only on error.
//
// When the handler starts depends on the kind: unary and server-streaming calls have exactly one
// request, so they start once the request has ended (a server-streaming handler that writes
// without waiting then runs wholly on this thread, like a unary one); client- and bidirectional
// streaming calls start as soon as the headers are in, and their requests reach the handler
// through a `StreamInbound` as they arrive. Responses of streaming calls leave through a
// `StreamOutbound`: headers with the first message (or Trailers-Only when the handler fails
// before writing any), then DATA as the client's window allows, then the status as trailers.
// Every failure is answered on its own stream; only HTTP/2 protocol errors end the connection.
// The loop's `ServerCallRecorder`, if any, hears of each served call's start, messages and end,
// exactly once each (the end whichever way it comes: a status, a reset, the connection closing).
// A deadline timer, the client's RST_STREAM or the connection closing cancels the handler's Task
// and ends its message streams.
//
// Against hostile or dead peers (GRPCServer.swift has the connection-level policy):
// - The handshake (TLS, then the client preface and its first SETTINGS) must be over within
//   `handshakeTimeout`, or the connection is closed; until then it is first in line for eviction.
// - Keepalive: after `keepaliveInterval` in which nothing was read, a PING; no answer within
//   `keepaliveTimeout` closes the connection.
// - Ping abuse, as gRPC servers judge it: a PING while no call is open (or has just ended) that
//   comes sooner than `minimumPingInterval` after the previous one is a strike; past
//   `maxPingStrikes` strikes, GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and the connection closes.
import CNGHTTP2
import EventLoop
import Logging
import RPCCore

final class ServerConnection: HTTP2Connection {
    private let core: ServerCore
    /// The client's address, for `ServerContext.remotePeer`.
    private let peer: String
    private let recorder: (any ServerCallRecorder)?
    private var streams: [Int32: RequestStream] = [:]
    private var lastActivity = ContinuousClock.now
    private var idleTimer: TimerID?
    private var draining = false
    /// Called once when the connection has closed (the listener forgets it).
    var onClose: (() -> Void)?
    /// TLS (if any), the client preface and its first SETTINGS have all arrived.
    private(set) var handshakeComplete = false
    /// The handshake bound, then the keepalive timer (one timer at a time).
    private var guardTimer: TimerID?
    private var awaitingPingAck = false
    private var pingStrikes = 0
    /// A call ended since the last PING: the next one is not judged (gRPC resets on activity).
    private var callEndedSincePing = false
    private var lastPingReceived: ContinuousClock.Instant?

    /// What the server knows about one request stream.
    private final class RequestStream {
        var method = ""
        var path = ""
        var contentType = ""
        var encoding: String?
        var timeout: Duration?
        var metadata = Metadata()
        var headerBytes = 0
        /// Why the headers cannot be served, answered once they end.
        var headerFailure: RPCError?
        var headersDone = false
        var responded = false
        var dispatched = false
        var assembler: MessageAssembler
        var task: Task<Void, Never>?
        var deadlineTimer: TimerID?
        let started = ContinuousClock.now
        var route: Route?
        /// The recorder heard of the call's end (it hears of a call's start with its route).
        var endRecorded = false
        /// A streaming call's queues, once its handler started.
        var inbound: StreamInbound?
        var outbound: StreamOutbound?
        var context: ServerContext?
        /// Request bytes received but not yet consumed from the stream window (backpressure).
        var heldBack = 0
        var headersSent = false
        var streaming: Bool { route.map { $0.kind != .unary } ?? false }
        var clientStreams: Bool { route?.kind.clientStreams ?? false }

        init(maxMessageSize: Int) { assembler = MessageAssembler(maxMessageSize: maxMessageSize) }
    }

    init(loop: EventLoop, fd: Int32, buffers: LoopBuffers, core: ServerCore, tls: TLSSession?,
         peer: String, recorder: (any ServerCallRecorder)?) {
        self.core = core
        self.peer = peer
        self.recorder = recorder
        let config = core.configuration
        super.init(loop: loop, fd: fd, buffers: buffers, server: true, tls: tls, settings: [
            (NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, config.maxConcurrentStreams),
            (NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, UInt32(config.maxHeaderListSize)),
        ])
        scheduleIdleCheck()
        guardTimer = loop.schedule(after: config.handshakeTimeout) { [weak self] in
            guard let self, !self.isClosed, !self.handshakeComplete else { return }
            self.core.logger.debug("handshake not finished in time, closing", metadata: [
                "timeout": "\(config.handshakeTimeout)", "tls": "\(self.tls.map { $0.established ? "done" : "pending" } ?? "none")",
            ])
            self.close()
        }
    }

    // MARK: - Handshake, keepalive and pings

    override func didReceiveSettings() {
        guard !handshakeComplete else { return }
        handshakeComplete = true
        if let guardTimer { loop.cancel(guardTimer) }
        scheduleKeepalive()
    }

    /// Eligible for eviction as idle: handshake done and no call open.
    var isIdle: Bool { handshakeComplete && streams.isEmpty }

    /// When a stream last began or ended (or the connection was accepted).
    var lastActivityTime: ContinuousClock.Instant { lastActivity }

    /// Makes room for a new connection: a polite GOAWAY when HTTP/2 is up, then close.
    func evict() {
        if handshakeComplete {
            submitGoAway()
            flush()
        }
        close()
    }

    private func scheduleKeepalive() {
        guardTimer = loop.schedule(after: core.configuration.keepaliveInterval) { [weak self] in
            self?.keepaliveCheck()
        }
    }

    private func keepaliveCheck() {
        guard !isClosed else { return }
        if receivedBytes {
            // The peer spoke during the interval: it is alive; look again an interval from now.
            receivedBytes = false
            scheduleKeepalive()
            return
        }
        awaitingPingAck = true
        submitPing()
        flush()
        let timeout = core.configuration.keepaliveTimeout
        guardTimer = loop.schedule(after: timeout) { [weak self] in
            guard let self, !self.isClosed, self.awaitingPingAck else { return }
            self.core.logger.debug("keepalive PING unanswered, closing", metadata: ["timeout": "\(timeout)"])
            self.close()
        }
    }

    override func didReceivePing(ack: Bool) {
        if ack {
            guard awaitingPingAck else { return }
            awaitingPingAck = false
            if let guardTimer { loop.cancel(guardTimer) }
            receivedBytes = false
            scheduleKeepalive()
            return
        }
        let now = ContinuousClock.now
        defer { lastPingReceived = now }
        if !streams.isEmpty || callEndedSincePing {
            // Pings while calls are active (or right after one) are fine: BDP and liveness probes.
            callEndedSincePing = false
            pingStrikes = 0
            return
        }
        if let last = lastPingReceived, now - last < core.configuration.minimumPingInterval { pingStrikes += 1 }
        if pingStrikes > core.configuration.maxPingStrikes, !closeRequested {
            core.logger.notice("client pings too often, sending GOAWAY ENHANCE_YOUR_CALM", metadata: ["strikes": "\(pingStrikes)"])
            submitGoAway(errorCode: NGHTTP2_ENHANCE_YOUR_CALM, debugData: "too_many_pings")
            closeRequested = true
        }
    }

    // MARK: - Request headers

    override func didBeginHeaders(stream: Int32) {
        lastActivity = .now
        if streams[stream] == nil {
            streams[stream] = RequestStream(maxMessageSize: core.configuration.maxMessageSize)
        }
    }

    override func didReceiveHeader(stream id: Int32, name: String, value: String) -> Bool {
        guard let stream = streams[id] else { return true }
        if stream.headersDone { return true }  // client trailers: nothing in them matters to us
        // RFC 7541's accounting: name + value + 32 per field. Past the limit the headers are
        // answered with a status once they end; far past it (a flood) the stream is reset.
        stream.headerBytes += name.utf8.count + value.utf8.count + 32
        let limit = core.configuration.maxHeaderListSize
        if stream.headerBytes > 4 * limit { return false }
        if stream.headerBytes > limit {
            stream.headerFailure = RPCError(.resourceExhausted, "request headers exceed \(limit) bytes")
        }
        if stream.headerFailure != nil { return true }
        switch name {
        case ":method": stream.method = value
        case ":path": stream.path = value
        case "content-type": stream.contentType = value
        case "grpc-encoding": stream.encoding = value
        case "grpc-timeout": stream.timeout = GRPCTimeout.parse(value)
        default:
            if !Metadata.isReserved(name), !stream.metadata.addWireValue(name: name, value: value) {
                stream.headerFailure = RPCError(.internal, "metadata \(name) is not valid base64")
            }
        }
        return true
    }

    override func didReceiveHeaders(stream id: Int32, endStream: Bool) {
        guard let stream = streams[id] else { return }
        if stream.headersDone {
            if endStream { requestComplete(id, stream) }
            return
        }
        stream.headersDone = true
        if let failure = stream.headerFailure {
            respond(id, stream, .failure(failure))
            return
        }
        if stream.method != "POST" {
            respondHTTP(id, stream, status: "405", code: .unimplemented, message: "gRPC requires POST, got \(stream.method)")
            return
        }
        if !(stream.contentType == "application/grpc" || stream.contentType.hasPrefix("application/grpc+")
            || stream.contentType.hasPrefix("application/grpc;")) {
            respondHTTP(id, stream, status: "415", code: .internal, message: "unsupported content-type \"\(stream.contentType)\"")
            return
        }
        guard let route = core.router.route(for: stream.path) else {
            respond(id, stream, .failure(RPCError(.unimplemented, "unknown method \(stream.path)")))
            return
        }
        stream.route = route
        recorder?.started(method: route.methodIndex)
        if let timeout = stream.timeout {
            stream.deadlineTimer = loop.schedule(after: timeout) { [weak self] in
                self?.deadlineExpired(id)
            }
        }
        if route.kind.clientStreams { startStreamingHandler(id, stream) }
        if endStream { requestComplete(id, stream) }
    }

    // MARK: - Request body

    override func didReceiveData(stream id: Int32, bytes: UnsafeRawBufferPointer) {
        guard let stream = streams[id], !stream.responded else { return }
        do throws(MessageAssembler.Failure) {
            try stream.assembler.append(bytes)
        } catch {
            switch error {
            case .tooLarge(let length):
                fail(id, stream, RPCError(.resourceExhausted,
                    "request message of \(length) bytes exceeds the limit of \(core.configuration.maxMessageSize)"))
            case .compressed:
                let encoding = stream.encoding ?? "identity"
                fail(id, stream, encoding == "identity"
                    ? RPCError(.internal, "compressed message without grpc-encoding")
                    : RPCError(.unimplemented, "message encoding \(encoding) is not supported (identity only)"))
            }
            return
        }
        guard stream.clientStreams, let inbound = stream.inbound else {
            // One request message: its bytes are taken as they come.
            consumeStream(id, bytes.count)
            if stream.assembler.messages.count > 1 {
                respond(id, stream, .failure(RPCError(.unimplemented, "method \(stream.path) received more than one request message")))
            }
            return
        }
        var full = false
        for message in stream.assembler.takeMessages() {
            if let route = stream.route { recorder?.received(method: route.methodIndex) }
            if inbound.push(message) { full = true }
        }
        if full || stream.heldBack > 0 {
            stream.heldBack += bytes.count
        } else {
            consumeStream(id, bytes.count)
        }
    }

    override func didReceiveEndOfData(stream id: Int32) {
        guard let stream = streams[id] else { return }
        requestComplete(id, stream)
    }

    /// The handler has drained its requests: the bytes held back may come off the window.
    private func releaseHeldBack(_ id: Int32) {
        guard let stream = streams[id], stream.heldBack > 0 else { return }
        consumeStream(id, stream.heldBack)
        stream.heldBack = 0
        scheduleFlush()
    }

    private func requestComplete(_ id: Int32, _ stream: RequestStream) {
        guard !stream.responded else { return }
        if stream.clientStreams {
            guard let inbound = stream.inbound else { return }
            if stream.assembler.hasPartialMessage {
                fail(id, stream, RPCError(.internal, "request ended inside a message"))
            } else {
                inbound.finish()
            }
            return
        }
        guard !stream.dispatched else { return }
        if stream.assembler.hasPartialMessage {
            stream.dispatched = true
            respond(id, stream, .failure(RPCError(.internal, "request ended inside a message")))
            return
        }
        guard stream.assembler.messages.count == 1, let route = stream.route else {
            stream.dispatched = true
            respond(id, stream, .failure(RPCError(.unimplemented, "method \(stream.path) received no request message")))
            return
        }
        if route.kind == .serverStreaming {
            startStreamingHandler(id, stream)
            return
        }
        guard case .unary(let handle) = route.handler else { return }
        stream.dispatched = true
        recorder?.received(method: route.methodIndex)
        let message = stream.assembler.messages[0]
        let deadline = stream.timeout.map { stream.started + $0 }
        let context = ServerContext(path: stream.path, requestMetadata: stream.metadata, deadline: deadline,
                                    remotePeer: peer, started: stream.started)
        let connection = LoopBound(self, loop: loop)
        // The handler starts right here on the loop thread and runs until its first suspension:
        // one that never suspends (a cache hit, a validation error) answers without any thread
        // hop. One that awaits (Redis) resumes on Swift's pool, and its result hops back. (Making
        // the loop the task's preferred executor instead was measured slower: BENCHMARKS.md.)
        stream.task = Task.immediate {
            let result: Result<[UInt8], RPCError>
            do throws(RPCError) {
                result = .success(try await handle(message, context))
            } catch {
                result = .failure(error)
            }
            if connection.loop.inEventLoop {
                connection.value.handlerFinished(id, result, context)
            } else {
                connection.loop.execute { connection.value.handlerFinished(id, result, context) }
            }
        }
    }

    // MARK: - Streaming calls

    /// Starts a streaming handler with its two queues. A server-streaming call's one request is
    /// queued (and the requests finished) before it starts.
    private func startStreamingHandler(_ id: Int32, _ stream: RequestStream) {
        guard let route = stream.route, case .streaming(let handle) = route.handler, !stream.dispatched else { return }
        stream.dispatched = true
        let connection = LoopBound(self, loop: loop)
        let loop = self.loop
        let inbound = StreamInbound(onCredit: {
            loop.execute { connection.value.releaseHeldBack(id) }
        })
        let method = route.methodIndex
        let outbound = StreamOutbound(kick: {
            if loop.inEventLoop {
                connection.value.outboundReady(id)
            } else {
                loop.execute { connection.value.outboundReady(id) }
            }
        }, sent: recorder.map { recorder in
            let recorder = LoopBound(recorder, loop: loop)
            return { recorder.value.sent(method: method) }
        }, endCall: { status, dropQueued in
            if loop.inEventLoop {
                connection.value.handedOverCallEnded(id, status, dropQueued: dropQueued)
            } else {
                loop.execute { connection.value.handedOverCallEnded(id, status, dropQueued: dropQueued) }
            }
        })
        if !route.kind.clientStreams {
            recorder?.received(method: method)
            _ = inbound.push(stream.assembler.takeMessages()[0])
            inbound.finish()
        }
        let deadline = stream.timeout.map { stream.started + $0 }
        let context = ServerContext(path: stream.path, requestMetadata: stream.metadata, deadline: deadline,
                                    remotePeer: peer, started: stream.started)
        stream.inbound = inbound
        stream.outbound = outbound
        stream.context = context
        stream.task = Task.immediate {
            let status: RPCError
            do throws(RPCError) {
                try await handle(inbound, outbound, context)
                // Handed over: the call goes on without this task, until its owner ends it; the
                // stream lets go of the task, whose memory (its frames' slabs) goes with it.
                if outbound.handedOver != nil {
                    connection.loop.execute { connection.value.streams[id]?.task = nil }
                    return
                }
                status = RPCError(.ok)
            } catch {
                status = error
            }
            if connection.loop.inEventLoop {
                connection.value.streamingHandlerFinished(id, status)
            } else {
                connection.loop.execute { connection.value.streamingHandlerFinished(id, status) }
            }
        }
    }

    /// The handler returned (OK) or threw, or the owner of its handed-over responses finished:
    /// the status follows what was written.
    private func streamingHandlerFinished(_ id: Int32, _ status: RPCError) {
        guard let stream = streams[id], !stream.responded, let outbound = stream.outbound else { return }
        stream.responded = true
        if let timer = stream.deadlineTimer { loop.cancel(timer) }
        stream.inbound?.fail(RPCError(.cancelled, "the call has ended"))
        outbound.finish(.trailers(statusTrailers(status, stream)))
        outbound.ended(status)
        ended(stream, status)
    }

    /// The owner of a handed-over call ends it: after what it queued, or at once when it let too
    /// much pile up.
    private func handedOverCallEnded(_ id: Int32, _ status: RPCError, dropQueued: Bool) {
        guard dropQueued else { return streamingHandlerFinished(id, status) }
        if let stream = streams[id] { fail(id, stream, status) }
    }

    /// Something for a streaming call to send: the headers first, then DATA as the window allows.
    private func outboundReady(_ id: Int32) {
        guard let stream = streams[id], let outbound = stream.outbound, !isClosed else { return }
        if stream.headersSent {
            resumeBody(stream: id)
            return
        }
        stream.headersSent = true
        if case .trailers(let trailers) = outbound.endsWithoutMessages {
            // Nothing was written: Trailers-Only.
            submitResponse(stream: id, headers: responseHeaders + trailers, body: nil)
        } else {
            let metadata = stream.context?.responseMetadata.headers ?? Metadata()
            submitStreamingResponse(stream: id, headers: responseHeaders + metadata.wireHeaders, body: outbound)
        }
        scheduleFlush()
    }

    /// Ends a call that failed on our side of the wire (a bad message, the deadline), whichever
    /// kind it is: a unary one is answered at once, a streaming one gets its status after what
    /// was already sent, and its handler is cancelled.
    private func fail(_ id: Int32, _ stream: RequestStream, _ error: RPCError) {
        guard !stream.responded else { return }
        guard let outbound = stream.outbound else {
            stream.task?.cancel()
            respond(id, stream, .failure(error))
            return
        }
        stream.responded = true
        if let timer = stream.deadlineTimer { loop.cancel(timer) }
        stream.task?.cancel()
        stream.inbound?.fail(error)
        if stream.headersSent {
            outbound.fail(error, end: .trailers(statusTrailers(error, stream)))
            resumeBody(stream: id)
        } else {
            outbound.fail(error)
            stream.headersSent = true
            submitResponse(stream: id, headers: responseHeaders + statusTrailers(error, stream), body: nil)
            scheduleFlush()
        }
        ended(stream, error)
    }

    private let responseHeaders: [HeaderField] = [
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity"),
    ]

    /// grpc-status, grpc-message and the handler's trailers.
    private func statusTrailers(_ status: RPCError, _ stream: RequestStream) -> [HeaderField] {
        var fields: [HeaderField] = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { fields.append(("grpc-message", StatusMessageEncoding.encode(status.message))) }
        let handlerTrailers = stream.context?.responseMetadata.trailers ?? Metadata()
        return fields + handlerTrailers.wireHeaders + status.metadata.wireHeaders
    }

    // MARK: - Responses

    private func handlerFinished(_ id: Int32, _ result: Result<[UInt8], RPCError>, _ context: ServerContext) {
        guard let stream = streams[id], !stream.responded else { return }
        respond(id, stream, result, metadata: context.responseMetadata)
    }

    private func deadlineExpired(_ id: Int32) {
        guard let stream = streams[id], !stream.responded else { return }
        stream.deadlineTimer = nil
        fail(id, stream, RPCError(.deadlineExceeded, "deadline exceeded"))
    }

    /// Sends the outcome: a message with trailers, or Trailers-Only for an error.
    private func respond(_ id: Int32, _ stream: RequestStream, _ result: Result<[UInt8], RPCError>,
                         metadata: (headers: Metadata, trailers: Metadata) = (Metadata(), Metadata())) {
        stream.responded = true
        if let timer = stream.deadlineTimer { loop.cancel(timer) }
        var headers = responseHeaders
        let status: RPCError
        switch result {
        case .success(let message):
            headers += metadata.headers.wireHeaders
            let trailers = [("grpc-status", "0")] + metadata.trailers.wireHeaders
            submitResponse(stream: id, headers: headers, body: OutgoingBody(message: message, trailers: trailers))
            if let route = stream.route { recorder?.sent(method: route.methodIndex) }
            status = RPCError(.ok)
        case .failure(var error):
            // A handler cannot fail with OK: a unary success needs a message.
            if error.code == .ok { error = RPCError(.unknown, "the handler failed without a status") }
            headers.append(("grpc-status", String(error.code.rawValue)))
            if !error.message.isEmpty { headers.append(("grpc-message", StatusMessageEncoding.encode(error.message))) }
            headers += metadata.trailers.wireHeaders + error.metadata.wireHeaders
            submitResponse(stream: id, headers: headers, body: nil)
            status = error
        }
        ended(stream, status)
        scheduleFlush()
    }

    /// The call has its status: the recorder hears of it (if the call had started), and the log.
    /// A call whose handler ran is the service's to log (its interceptors know more of it: the
    /// caller, the trace), so the transport notes it at debug only; one refused before any
    /// handler ran (an unknown method, a malformed or oversized request) only the transport saw,
    /// and it logs it at info.
    private func ended(_ stream: RequestStream, _ status: RPCError) {
        recordEnd(stream, status.code)
        core.logger.log(level: stream.dispatched ? .debug : .info, "rpc", metadata: [
            "method": "\(stream.path)", "code": "\(status.code)", "error": "\(status.message)", "peer": "\(peer)",
            "duration_ms": "\((ContinuousClock.now - stream.started).milliseconds)",
        ])
    }

    private func recordEnd(_ stream: RequestStream, _ code: StatusCode) {
        guard let recorder, let route = stream.route, !stream.endRecorded else { return }
        stream.endRecorded = true
        recorder.finished(method: route.methodIndex, code: code, duration: .now - stream.started)
    }

    /// A non-gRPC HTTP answer (405, 415) that still carries a grpc-status for gRPC clients.
    private func respondHTTP(_ id: Int32, _ stream: RequestStream, status: String, code: StatusCode, message: String) {
        stream.responded = true
        submitResponse(stream: id, headers: [
            (":status", status), ("content-type", "application/grpc"),
            ("grpc-status", String(code.rawValue)), ("grpc-message", StatusMessageEncoding.encode(message)),
        ], body: nil)
        scheduleFlush()
    }

    // MARK: - Stream and connection lifecycle

    /// The response is complete while the client still sends (a handler that ended before the
    /// requests did): as RFC 9113 8.1 allows, RST_STREAM NO_ERROR tells it to stop, so neither
    /// side waits on a window the other will never reopen.
    override func didSendEndOfStream(stream id: Int32) {
        guard streams[id] != nil, !peerFinishedSending(stream: id) else { return }
        submitReset(stream: id, errorCode: NGHTTP2_NO_ERROR)
        scheduleFlush()
    }

    override func streamDidClose(stream id: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        if let timer = stream.deadlineTimer { loop.cancel(timer) }
        // Closed before we answered: the client reset the stream, so the handler's work is moot.
        if !stream.responded {
            stream.task?.cancel()
            recordEnd(stream, .cancelled)
        }
        endQueues(stream, RPCError(.cancelled, "the client cancelled the call"))
        lastActivity = .now
        callEndedSincePing = true
        if draining && streams.isEmpty && goAwaySent { closeRequested = true }
    }

    /// Graceful shutdown in two steps, as RFC 9113 advises: a GOAWAY that refuses nothing yet (so
    /// the client stops opening streams), then, a round trip later, the GOAWAY naming the last
    /// stream we took; the connection closes once those have been answered. Requests already on
    /// the wire when the first one left are served, not silently dropped.
    func drain() {
        guard !isClosed, !draining else { return }
        guard handshakeComplete else {
            // Not speaking HTTP/2 yet: there is nothing to drain.
            close()
            return
        }
        draining = true
        submitShutdownNotice()
        flush()
        loop.schedule(after: .milliseconds(100)) { [weak self] in
            guard let self, !self.isClosed else { return }
            self.submitGoAway()
            if self.streams.isEmpty { self.closeRequested = true }
            self.flush()
        }
    }

    /// The grace period is over: cancel what still runs and close.
    func forceClose() {
        for stream in streams.values { stream.task?.cancel() }
        close()
    }

    /// A streaming handler still reading or writing learns that its call is gone.
    private func endQueues(_ stream: RequestStream, _ error: RPCError) {
        stream.inbound?.fail(error)
        stream.outbound?.fail(error)
    }

    private func scheduleIdleCheck() {
        let timeout = core.configuration.idleTimeout
        idleTimer = loop.schedule(after: timeout) { [weak self] in
            guard let self, !self.isClosed else { return }
            if self.streams.isEmpty, ContinuousClock.now - self.lastActivity >= timeout {
                self.submitGoAway()
                self.closeRequested = true
                self.flush()
            } else {
                self.scheduleIdleCheck()
            }
        }
    }

    override func connectionDidClose() {
        if let idleTimer { loop.cancel(idleTimer) }
        if let guardTimer { loop.cancel(guardTimer) }
        if let closeReason { core.logger.debug("connection closed", metadata: ["reason": "\(closeReason)"]) }
        for stream in streams.values {
            stream.task?.cancel()
            if !stream.responded { recordEnd(stream, .cancelled) }
            if let timer = stream.deadlineTimer { loop.cancel(timer) }
            endQueues(stream, RPCError(.unavailable, "the connection closed"))
        }
        streams.removeAll()
        onClose?()
        onClose = nil
    }
}

extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
