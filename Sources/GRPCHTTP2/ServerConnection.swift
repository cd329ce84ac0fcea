// One accepted HTTP/2 connection of the gRPC server, on its loop thread.
//
// Each request stream walks: headers (validated as the spec asks: POST, application/grpc, a known
// path) -> DATA assembled into length-prefixed messages (size limit checked on the prefix) ->
// end of stream -> the route's async handler runs in its own Task, started on this thread (one
// that never suspends answers at once; one that awaits hands its result back with `execute`) ->
// the result goes out as HEADERS, DATA and trailers, or as Trailers-Only on error.
// Every failure is answered on its own stream; only HTTP/2 protocol errors end the connection.
// A deadline timer or the client's RST_STREAM cancels the handler's Task.
import CNGHTTP2
import EventLoop
import Logging
import RPCCore

final class ServerConnection: HTTP2Connection {
    private let core: ServerCore
    private var streams: [Int32: RequestStream] = [:]
    private var lastActivity = ContinuousClock.now
    private var idleTimer: TimerID?
    private var draining = false
    /// Called once when the connection has closed (the listener forgets it).
    var onClose: (() -> Void)?

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

        init(maxMessageSize: Int) { assembler = MessageAssembler(maxMessageSize: maxMessageSize) }
    }

    init(loop: EventLoop, fd: Int32, buffers: LoopBuffers, core: ServerCore) {
        self.core = core
        let config = core.configuration
        super.init(loop: loop, fd: fd, buffers: buffers, server: true, settings: [
            (NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, config.maxConcurrentStreams),
            (NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, UInt32(config.maxHeaderListSize)),
        ])
        scheduleIdleCheck()
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
        if core.router.route(for: stream.path) == nil {
            respond(id, stream, .failure(RPCError(.unimplemented, "unknown method \(stream.path)")))
            return
        }
        if let timeout = stream.timeout {
            stream.deadlineTimer = loop.schedule(after: timeout) { [weak self] in
                self?.deadlineExpired(id)
            }
        }
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
                respond(id, stream, .failure(RPCError(.resourceExhausted,
                    "request message of \(length) bytes exceeds the limit of \(core.configuration.maxMessageSize)")))
            case .compressed:
                let encoding = stream.encoding ?? "identity"
                respond(id, stream, .failure(encoding == "identity"
                    ? RPCError(.internal, "compressed message without grpc-encoding")
                    : RPCError(.unimplemented, "message encoding \(encoding) is not supported (identity only)")))
            }
            return
        }
        if stream.assembler.messages.count > 1 {
            respond(id, stream, .failure(RPCError(.unimplemented, "unary method \(stream.path) received more than one request message")))
        }
    }

    override func didReceiveEndOfData(stream id: Int32) {
        guard let stream = streams[id] else { return }
        requestComplete(id, stream)
    }

    private func requestComplete(_ id: Int32, _ stream: RequestStream) {
        guard !stream.responded, !stream.dispatched else { return }
        stream.dispatched = true
        if stream.assembler.hasPartialMessage {
            respond(id, stream, .failure(RPCError(.internal, "request ended inside a message")))
            return
        }
        guard stream.assembler.messages.count == 1, let route = core.router.route(for: stream.path) else {
            respond(id, stream, .failure(RPCError(.unimplemented, "unary method \(stream.path) received no request message")))
            return
        }
        let message = stream.assembler.messages[0]
        let deadline = stream.timeout.map { stream.started + $0 }
        let context = ServerContext(path: stream.path, requestMetadata: stream.metadata, deadline: deadline)
        let connection = LoopBound(self, loop: loop)
        // The handler starts right here on the loop thread and runs until its first suspension:
        // one that never suspends (a cache hit, a validation error) answers without any thread
        // hop. One that awaits (Redis) resumes on Swift's pool, and its result hops back. (Making
        // the loop the task's preferred executor instead was measured slower: BENCHMARKS.md.)
        stream.task = Task.immediate {
            let result: Result<[UInt8], RPCError>
            do throws(RPCError) {
                result = .success(try await route.handle(message, context))
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

    // MARK: - Responses

    private func handlerFinished(_ id: Int32, _ result: Result<[UInt8], RPCError>, _ context: ServerContext) {
        guard let stream = streams[id], !stream.responded else { return }
        respond(id, stream, result, metadata: context.responseMetadata)
    }

    private func deadlineExpired(_ id: Int32) {
        guard let stream = streams[id], !stream.responded else { return }
        stream.deadlineTimer = nil
        stream.task?.cancel()
        respond(id, stream, .failure(RPCError(.deadlineExceeded, "deadline exceeded")))
    }

    /// Sends the outcome: a message with trailers, or Trailers-Only for an error.
    private func respond(_ id: Int32, _ stream: RequestStream, _ result: Result<[UInt8], RPCError>,
                         metadata: (headers: Metadata, trailers: Metadata) = (Metadata(), Metadata())) {
        stream.responded = true
        if let timer = stream.deadlineTimer { loop.cancel(timer) }
        var headers: [HeaderField] = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity")]
        let status: RPCError
        switch result {
        case .success(let message):
            headers += metadata.headers.wireHeaders
            let trailers = [("grpc-status", "0")] + metadata.trailers.wireHeaders
            submitResponse(stream: id, headers: headers, body: OutgoingBody(message: message, trailers: trailers))
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
        switch status.code {
        case .internal, .unknown, .unavailable, .dataLoss:
            // Failures on our side (or a dependency's) are worth an operator's attention.
            core.logger.error("rpc failed", metadata: ["path": "\(stream.path)", "status": "\(status)"])
        default:
            core.logger.debug("rpc", metadata: [
                "path": "\(stream.path)", "status": "\(status.code)",
                "ms": "\((ContinuousClock.now - stream.started).milliseconds)",
            ])
        }
        scheduleFlush()
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

    override func streamDidClose(stream id: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        if let timer = stream.deadlineTimer { loop.cancel(timer) }
        // Closed before we answered: the client reset the stream, so the handler's work is moot.
        if !stream.responded { stream.task?.cancel() }
        lastActivity = .now
        if draining && streams.isEmpty && goAwaySent { closeRequested = true }
    }

    /// Graceful shutdown in two steps, as RFC 9113 advises: a GOAWAY that refuses nothing yet (so
    /// the client stops opening streams), then, a round trip later, the GOAWAY naming the last
    /// stream we took; the connection closes once those have been answered. Requests already on
    /// the wire when the first one left are served, not silently dropped.
    func drain() {
        guard !isClosed, !draining else { return }
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
        for stream in streams.values {
            stream.task?.cancel()
            if let timer = stream.deadlineTimer { loop.cancel(timer) }
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
