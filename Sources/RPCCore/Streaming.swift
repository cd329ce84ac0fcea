// Message streams, the vocabulary every RPC kind but unary needs: a transport hands a handler (or
// a client) a `MessageSource` of the peer's messages and a `MessageSink` for its own, in bytes;
// `RPCAsyncSequence` and `RPCWriter` give them their message types.
//
// Backpressure is the transport's: a sink's `write` suspends while the peer's flow-control window
// and the stream's small buffer are full, and a source only lets the peer send more once its
// messages have been taken. Both end when the call ends (cancelled, reset, deadline, connection
// gone): `write` and `next` then throw the call's status, so a handler never waits for ever.

/// Where one side of a call writes its serialized messages, in order.
public protocol MessageSink: Sendable {
    /// Queues one message; suspends while the stream is full. Throws once the call has ended.
    func write(_ message: [UInt8]) async throws(RPCError)
    /// A server's responses only: keeps the call open after its handler returns, its further
    /// responses sent through what this returns. At most `bufferLimit` bytes may wait unsent; a
    /// client that lets more pile up has its call ended with RESOURCE_EXHAUSTED.
    func handOver(bufferLimit: Int) -> any HandedOverSink
    /// What `handOver` returned, once it was called.
    var handedOver: (any HandedOverSink)? { get }
}

/// A streaming call's responses once its handler has handed them over and returned: a call that
/// mostly waits (a watch) then holds no suspended task, only what it needs to go on. Nothing
/// here waits; the call ends with `finish`, or by itself (the client cancels, the deadline
/// passes, the connection closes, too much waits unsent), and `whenEnded` hears of either.
public protocol HandedOverSink: Sendable {
    /// Queues one message at once; false when the call is over (nothing was queued).
    @discardableResult func send(_ message: [UInt8]) -> Bool
    /// Ends the call with `status` once what is queued has gone out.
    func finish(_ status: RPCError)
    /// Runs `action` once, with the call's final status, however it ends; at once if it has.
    func whenEnded(_ action: @escaping @Sendable (RPCError) -> Void)
}

/// Where one side of a call reads the peer's serialized messages, in order.
public protocol MessageSource: Sendable {
    /// The next message, or nil once the peer has finished sending (half-close, or the end of
    /// the response). Throws the call's status when it ended otherwise.
    func next() async throws(RPCError) -> [UInt8]?
}

/// Writes typed messages of a streaming call: a handler's responses, a client's requests.
public struct RPCWriter<Message: GRPCMessage>: Sendable {
    private let sink: any MessageSink

    public init(_ sink: any MessageSink) { self.sink = sink }

    /// Sends one message; suspends while the peer is not reading (HTTP/2 flow control).
    public func write(_ message: Message) async throws(RPCError) {
        try await sink.write(message.serializedBytes())
    }

    /// Sends messages in order.
    public func write(contentsOf messages: some Sequence<Message>) async throws(RPCError) {
        for message in messages { try await write(message) }
    }

    /// Lets the handler return while the call goes on: the rest of the responses are sent
    /// through the returned writer, which ends the call (see `HandedOverSink`). A server's
    /// handlers only (a client's requests cannot be handed over); its interceptors hear of the
    /// call's end when it comes.
    public func handOver(bufferLimit: Int = 256 * 1024) -> HandedOverWriter<Message> {
        HandedOverWriter(sink: sink.handOver(bufferLimit: bufferLimit))
    }
}

/// Typed responses of a call its handler handed over (`RPCWriter.handOver`).
public struct HandedOverWriter<Message: GRPCMessage>: Sendable {
    let sink: any HandedOverSink

    /// Queues one response at once; false when the call is over.
    @discardableResult public func send(_ message: Message) -> Bool {
        sink.send(message.serializedBytes())
    }

    /// Ends the call, with OK unless told otherwise, once the queued responses have gone out.
    public func finish(_ status: RPCError = RPCError(.ok)) { sink.finish(status) }

    /// Runs `action` once, with the final status, however the call ends.
    public func whenEnded(_ action: @escaping @Sendable (RPCError) -> Void) { sink.whenEnded(action) }
}

/// The typed messages of a stream, in order: a handler's requests, a client's responses. A
/// message that does not decode ends the sequence with INTERNAL.
public struct RPCAsyncSequence<Message: GRPCMessage>: AsyncSequence, Sendable {
    public typealias Element = Message
    public typealias Failure = RPCError

    private let source: any MessageSource

    public init(_ source: any MessageSource) { self.source = source }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: source) }

    public struct AsyncIterator: AsyncIteratorProtocol {
        public typealias Element = Message
        public typealias Failure = RPCError
        let source: any MessageSource

        public mutating func next() async throws(RPCError) -> Message? {
            try Self.decode(await source.next())
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(RPCError) -> Message? {
            try Self.decode(await source.next())
        }

        private static func decode(_ bytes: [UInt8]?) throws(RPCError) -> Message? {
            guard let bytes else { return nil }
            do {
                return try Message(serializedBytes: bytes)
            } catch {
                throw RPCError(.internal, "\(error)")
            }
        }
    }

    /// The single message a unary-request stream must carry (server streaming handlers).
    func single(path: String) async throws(RPCError) -> Message {
        var iterator = makeAsyncIterator()
        guard let message = try await iterator.next() else {
            throw RPCError(.unimplemented, "\(path) received no request message")
        }
        guard try await iterator.next() == nil else {
            throw RPCError(.unimplemented, "\(path) received more than one request message")
        }
        return message
    }
}
