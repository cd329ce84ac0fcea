// One client HTTP/2 connection: many calls multiplexed as streams, on the channel's loop.
//
// A unary call is submitted as HEADERS + one length-prefixed DATA frame with END_STREAM; a
// streaming call's HEADERS go out at once and its requests follow from a `StreamOutbound` as the
// caller writes them, END_STREAM when it finishes. The response's first HEADERS are the headers
// (or, with END_STREAM, Trailers-Only), DATA is assembled into messages (a streaming call's go to
// a `StreamInbound`, whose draining reopens the stream's window), and the second HEADERS are the
// trailers. The call's outcome is decided when nghttp2 closes the stream: grpc-status if the
// server sent one, else the HTTP status mapped as the spec says, else the RST_STREAM code.
import CNGHTTP2
import EventLoop
import RPCCore
import Synchronization

/// A value that arrives once, awaited from any task.
final class Promise<Value: Sendable>: Sendable {
    private let state = Mutex<(value: Value?, waiters: [CheckedContinuation<Value, Never>])>((nil, []))

    func fulfil(_ value: Value) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value, Never>] in
            guard state.value == nil else { return [] }
            state.value = value
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    var value: Value {
        get async {
            await withCheckedContinuation { continuation in
                let value = state.withLock { state -> Value? in
                    if state.value == nil { state.waiters.append(continuation) }
                    return state.value
                }
                if let value { continuation.resume(returning: value) }
            }
        }
    }
}

/// What a streaming call's task and the loop share: the two queues and the response metadata.
final class StreamingCallParts: ClientStream {
    let inbound: StreamInbound
    let outbound: StreamOutbound
    let headers = Promise<Result<Metadata, RPCError>>()
    let trailerMetadata = Promise<Metadata>()

    init(inbound: StreamInbound, outbound: StreamOutbound) {
        self.inbound = inbound
        self.outbound = outbound
    }

    var requests: any MessageSink { outbound }
    var responses: any MessageSource { inbound }
    func finishRequests() async { outbound.finish(.endStream) }
    func responseHeaders() async throws(RPCError) -> Metadata { try await headers.value.get() }
    func trailers() async -> Metadata { await trailerMetadata.value }

    /// The call ended: OK after the queued responses, or the error.
    func end(_ status: RPCError, headers received: Metadata, trailers: Metadata) {
        headers.fulfil(status.code == .ok || !received.isEmpty ? .success(received) : .failure(status))
        trailerMetadata.fulfil(trailers)
        if status.code == .ok {
            inbound.finish()
        } else {
            inbound.fail(status, keepingQueued: true)
        }
        outbound.fail(status.code == .ok ? RPCError(.failedPrecondition, "the call has ended") : status)
    }
}

/// A call in flight, owned by the channel's loop.
final class ClientCall {
    let id: UInt64
    let path: String
    /// A unary call's request; nil for a streaming call, whose requests come from `streaming`.
    let request: [UInt8]?
    let streaming: StreamingCallParts?
    let options: CallOptions
    let deadline: ContinuousClock.Instant?
    private var continuation: CheckedContinuation<Result<UnaryResponse, RPCError>, Never>?
    private var finished = false
    var stream: Int32 = 0
    weak var connection: ClientConnection?
    var deadlineTimer: TimerID?
    /// Refused by a server that was going away: retried once on a new connection.
    var retried = false

    // The response as it arrives.
    var httpStatus: Int?
    var grpcStatus: Int?
    var grpcMessage = ""
    var headers = Metadata()
    var trailers = Metadata()
    var headersDone = false
    var assembler: MessageAssembler
    /// Response bytes received but not yet consumed from the stream window (backpressure).
    var heldBack = 0

    /// A unary call.
    init(id: UInt64, path: String, request: [UInt8], options: CallOptions, maxResponseSize: Int,
         continuation: CheckedContinuation<Result<UnaryResponse, RPCError>, Never>) {
        self.id = id
        self.path = path
        self.request = request
        self.streaming = nil
        self.options = options
        self.deadline = options.timeout.map { ContinuousClock.now + $0 }
        self.continuation = continuation
        assembler = MessageAssembler(maxMessageSize: maxResponseSize)
    }

    /// A streaming call.
    init(id: UInt64, path: String, streaming: StreamingCallParts, options: CallOptions, maxResponseSize: Int) {
        self.id = id
        self.path = path
        self.request = nil
        self.streaming = streaming
        self.options = options
        self.deadline = options.timeout.map { ContinuousClock.now + $0 }
        assembler = MessageAssembler(maxMessageSize: maxResponseSize)
    }

    var isFinished: Bool { finished }

    /// Told when the call is answered (the channel stops tracking it).
    var onFinish: ((UInt64) -> Void)?

    /// Ends the call exactly once: resumes a unary caller, or ends a streaming call's queues.
    func finish(_ result: Result<UnaryResponse, RPCError>) {
        guard !finished else { return }
        finished = true
        if let continuation {
            self.continuation = nil
            continuation.resume(returning: result)
        }
        if let streaming {
            switch result {
            case .success: streaming.end(RPCError(.ok), headers: headers, trailers: trailers)
            case .failure(let error): streaming.end(error, headers: headers, trailers: error.metadata)
            }
        }
        onFinish?(id)
        onFinish = nil
    }
}

final class ClientConnection: HTTP2Connection {
    let authority: String
    private var calls: [Int32: ClientCall] = [:]
    private var connecting = true
    /// Set when the server sent GOAWAY: no new calls go on this connection.
    private(set) var goingAway = false
    private let onConnected: (ClientConnection) -> Void
    private let onClosed: (ClientConnection) -> Void
    private let onRefused: (ClientCall) -> Void

    private let scheme: String

    init(loop: EventLoop, fd: Int32, buffers: LoopBuffers, authority: String, tls: TLSSession? = nil,
         onConnected: @escaping (ClientConnection) -> Void,
         onClosed: @escaping (ClientConnection) -> Void,
         onRefused: @escaping (ClientCall) -> Void) {
        self.authority = authority
        self.onConnected = onConnected
        self.onClosed = onClosed
        self.onRefused = onRefused
        scheme = tls == nil ? "http" : "https"
        super.init(loop: loop, fd: fd, buffers: buffers, server: false, tls: tls, settings: [
            (NGHTTP2_SETTINGS_ENABLE_PUSH, 0),
        ])
    }

    var isReady: Bool { !connecting && transportEstablished && !goingAway && !isClosed }
    /// Connected, and the TLS handshake is under way.
    var inTLSHandshake: Bool { !connecting && !transportEstablished }

    override func handleIO(_ events: IOEvents) {
        guard connecting else { return super.handleIO(events) }
        if let error = Socket.connectResult(fd) {
            closeReason = "\(error)"
            failAll(RPCError(.unavailable, "cannot connect to \(authority): \(error)"))
            close()
            return
        }
        connecting = false
        beginTransport()
        // With TLS, calls start once the handshake is done (`tlsHandshakeDidComplete`).
        if tls == nil, !isClosed { onConnected(self) }
    }

    override func tlsHandshakeDidComplete() {
        onConnected(self)
    }

    /// Starts a call on this connection (ready, on the loop).
    func startCall(_ call: ClientCall) {
        var headers: [HeaderField] = [
            (":method", "POST"), (":scheme", scheme), (":path", call.path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "food-platform-grpc/1.0"),
            ("grpc-accept-encoding", "identity"),
        ]
        if let deadline = call.deadline {
            let remaining = deadline - .now
            guard remaining > .zero else {
                call.finish(.failure(RPCError(.deadlineExceeded, "deadline exceeded before the call started")))
                return
            }
            headers.append(("grpc-timeout", GRPCTimeout.encode(remaining)))
            call.deadlineTimer = loop.schedule(after: remaining) { [weak self, weak call] in
                guard let self, let call else { return }
                self.abandon(call, RPCError(.deadlineExceeded, "deadline exceeded after \(call.options.timeout ?? .zero)"))
            }
        }
        headers += call.options.metadata.wireHeaders
        let stream: Int32
        if let request = call.request {
            stream = submitRequest(headers: headers, body: OutgoingBody(message: request))
        } else {
            stream = submitStreamingRequest(headers: headers, body: call.streaming!.outbound)
        }
        guard stream > 0 else {
            call.finish(.failure(RPCError(.unavailable, "cannot start a stream to \(authority) (error \(stream))")))
            return
        }
        call.stream = stream
        call.connection = self
        calls[stream] = call
        scheduleFlush()
    }

    /// Gives up on a call (deadline, cancellation): resets its stream and answers the caller now.
    func abandon(_ call: ClientCall, _ error: RPCError) {
        guard !call.isFinished else { return }
        if let timer = call.deadlineTimer { loop.cancel(timer) }
        call.finish(.failure(error))
        if calls.removeValue(forKey: call.stream) != nil {
            submitReset(stream: call.stream, errorCode: NGHTTP2_CANCEL)
            scheduleFlush()
        }
    }

    // MARK: - Response

    override func didReceiveHeader(stream: Int32, name: String, value: String) -> Bool {
        guard let call = calls[stream] else { return true }
        switch name {
        case ":status": call.httpStatus = Int(value)
        case "grpc-status": call.grpcStatus = Int(value)
        case "grpc-message": call.grpcMessage = StatusMessageEncoding.decode(value)
        default:
            guard !Metadata.isReserved(name) else { return true }
            // Before the first HEADERS frame ends these are headers; after, trailers.
            if call.headersDone {
                _ = call.trailers.addWireValue(name: name, value: value)
            } else {
                _ = call.headers.addWireValue(name: name, value: value)
            }
        }
        return true
    }

    override func didReceiveHeaders(stream: Int32, endStream: Bool) {
        guard let call = calls[stream] else { return }
        if endStream && !call.headersDone {
            // Trailers-Only: what arrived as headers are the trailers.
            call.trailers = call.headers
            call.headers = Metadata()
        } else if !call.headersDone, call.httpStatus == 200, let streaming = call.streaming {
            streaming.headers.fulfil(.success(call.headers))
        }
        call.headersDone = true
        if endStream, call.streaming != nil, !finishedSending(stream: stream) {
            // The server answered in full while we still send: our requests are moot, and the
            // stream closes (and the call ends) once our side is reset.
            submitReset(stream: stream, errorCode: NGHTTP2_NO_ERROR)
            scheduleFlush()
        }
    }

    override func didReceiveData(stream: Int32, bytes: UnsafeRawBufferPointer) {
        guard let call = calls[stream] else { return }
        do throws(MessageAssembler.Failure) {
            try call.assembler.append(bytes)
        } catch {
            let reason: RPCError = switch error {
            case .tooLarge(let length): RPCError(.resourceExhausted, "response message of \(length) bytes exceeds the limit")
            case .compressed: RPCError(.internal, "compressed response, but identity was asked for")
            }
            abandon(call, reason)
            return
        }
        guard let streaming = call.streaming else {
            consumeStream(stream, bytes.count)
            return
        }
        var full = false
        for message in call.assembler.takeMessages() where streaming.inbound.push(message) { full = true }
        if full || call.heldBack > 0 {
            call.heldBack += bytes.count
        } else {
            consumeStream(stream, bytes.count)
        }
    }

    /// The caller drained its responses: the held-back bytes come off the window.
    func releaseHeldBack(_ call: ClientCall) {
        guard calls[call.stream] === call, call.heldBack > 0 else { return }
        consumeStream(call.stream, call.heldBack)
        call.heldBack = 0
        scheduleFlush()
    }

    override func streamDidClose(stream: Int32, errorCode: UInt32) {
        guard let call = calls.removeValue(forKey: stream) else { return }
        if let timer = call.deadlineTimer { loop.cancel(timer) }
        if errorCode == NGHTTP2_REFUSED_STREAM.rawValue, call.httpStatus == nil, !call.retried, call.request != nil {
            // The server never saw it (GOAWAY or stream limit): safe to send again elsewhere.
            call.retried = true
            // Not from inside nghttp2's callback: the retry may open a connection.
            loop.schedule(after: .zero) { [onRefused] in onRefused(call) }
            return
        }
        call.finish(outcome(of: call, resetCode: errorCode))
    }

    private func outcome(of call: ClientCall, resetCode: UInt32) -> Result<UnaryResponse, RPCError> {
        if let status = call.grpcStatus {
            guard status == 0 else {
                let code = StatusCode(rawValue: status) ?? .unknown
                return .failure(RPCError(code, call.grpcMessage, metadata: call.trailers))
            }
            if call.streaming != nil {
                guard !call.assembler.hasPartialMessage else {
                    return .failure(RPCError(.internal, "the response ended inside a message"))
                }
                return .success(UnaryResponse(message: [], headers: call.headers, trailers: call.trailers))
            }
            let messages = call.assembler.messages
            guard messages.count == 1, !call.assembler.hasPartialMessage else {
                return .failure(RPCError(.unimplemented, "expected one response message, got \(messages.count)"))
            }
            return .success(UnaryResponse(message: messages[0], headers: call.headers, trailers: call.trailers))
        }
        if let http = call.httpStatus, http != 200 {
            return .failure(RPCError(StatusCode(httpStatus: http), "HTTP status \(http) from \(authority)"))
        }
        if resetCode == NGHTTP2_REFUSED_STREAM.rawValue {
            return .failure(RPCError(.unavailable, "\(authority) refused the stream"))
        }
        if resetCode == NGHTTP2_CANCEL.rawValue {
            return .failure(RPCError(.cancelled, "\(authority) cancelled the stream"))
        }
        if resetCode != 0 {
            return .failure(RPCError(.internal, "\(authority) reset the stream (HTTP/2 error \(resetCode))"))
        }
        return .failure(RPCError(.internal, "\(authority) ended the stream without a grpc-status"))
    }

    override func didReceiveGoAway(lastStreamID: Int32) {
        goingAway = true
    }

    private func failAll(_ error: RPCError) {
        let open = calls.values
        calls.removeAll()
        for call in open {
            if let timer = call.deadlineTimer { loop.cancel(timer) }
            call.finish(.failure(error))
        }
    }

    override func connectionDidClose() {
        failAll(RPCError(.unavailable, "connection to \(authority) closed" + (closeReason.map { ": \($0)" } ?? "")))
        onClosed(self)
    }
}
