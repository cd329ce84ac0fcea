// The two queues between a streaming call's task and its connection's loop, one per direction.
// They are the only state a handler (or a client's task) shares with a loop thread, so each is a
// small lock-protected box; everything else about the stream stays confined to the loop.
//
// `StreamOutbound` holds messages on their way to the peer. The task appends (`write`); nghttp2's
// data provider takes framed bytes out on the loop as fast as the peer's flow-control window lets
// it. Past `highWater` buffered bytes the writer waits until the provider has drained the queue
// below `lowWater`, so a peer that reads nothing holds the task, never memory: a stream buffers
// at most `highWater` plus the one message being written. The loop is only woken ("kicked") when
// it has nothing to send for the stream (before the first message, and after the provider had
// found the queue empty and deferred), so a burst of writes costs one wake-up, and a handler that
// runs on the loop thread writes without any.
//
// A server's handler may hand its responses over and return (`handOver`): the queue then is the
// call's whole state, with no task behind it. Its owner `send`s without waiting; past the limit
// it chose the call is ended with RESOURCE_EXHAUSTED (the queue dropped), so a client that reads
// nothing still costs bounded memory. The connection ends the call when told to (`finish`), and
// `ended` runs the owner's `whenEnded` actions once, with the final status, however it ended.
//
// `StreamInbound` holds the peer's messages until the task takes them. The connection consumes
// received bytes from the HTTP/2 stream window only while the queue is below `highWater`; beyond
// it the bytes are held back, the peer's window closes, and once the task has drained the queue
// below `lowWater` the held-back bytes are released (`onCredit`) and the window reopens. A fast
// sender therefore costs a stream at most `highWater` of queued messages plus one window.
import RPCCore
import Synchronization

/// Buffer limits of one stream direction.
enum StreamBuffering {
    /// A writer waits, and inbound bytes are held back, past this many buffered bytes.
    static let highWater = 64 * 1024
    /// A waiting writer resumes, and held-back bytes are released, below this.
    static let lowWater = 16 * 1024
}

/// Messages queued for sending on one stream, and how the stream ends.
final class StreamOutbound: MessageSink, HandedOverSink {
    /// How the sending side ends once the queue is empty.
    enum End: Sendable {
        /// DATA carries END_STREAM (a client's half-close).
        case endStream
        /// A trailing HEADERS frame ends the stream (a server's status).
        case trailers([HeaderField])
    }

    /// What the data provider found.
    enum ReadResult {
        /// `count` bytes copied; more may follow.
        case data(Int)
        /// Nothing to send yet: the provider defers until the next kick.
        case empty
        /// `count` bytes copied and the queue is finished: end the stream this way.
        case ended(Int, End)
    }

    private struct State {
        var messages: [[UInt8]] = []
        var head = 0
        /// Framed bytes of `messages[head]` already taken (the 5-byte prefix counts).
        var offset = 0
        var buffered = 0
        var end: End?
        var failure: RPCError?
        var writer: CheckedContinuation<RPCError?, Never>?
        /// True when the loop must be told that there is something to send.
        var needsKick = true
        /// True once any message was queued (the response then cannot be Trailers-Only).
        var wroteAny = false
        /// Set by `handOver`: the most bytes `send` lets wait.
        var handOverLimit: Int?
        /// The call's final status, once `ended` ran.
        var finalStatus: RPCError?
        var endActions: [@Sendable (RPCError) -> Void] = []
    }

    private let state = Mutex(State())
    /// Asks the connection's loop to send what is queued (from any thread).
    private let kick: @Sendable () -> Void
    /// Told on the loop of each message whose last byte was taken for a DATA frame (metrics).
    private let sent: (@Sendable () -> Void)?
    /// Asks the connection to end a handed-over call: with its status after what is queued, or
    /// (`dropQueued`) at once.
    private let endCall: (@Sendable (_ status: RPCError, _ dropQueued: Bool) -> Void)?

    init(kick: @escaping @Sendable () -> Void, sent: (@Sendable () -> Void)? = nil,
         endCall: (@Sendable (_ status: RPCError, _ dropQueued: Bool) -> Void)? = nil) {
        self.kick = kick
        self.sent = sent
        self.endCall = endCall
    }

    // MARK: - Handed over

    func handOver(bufferLimit: Int) -> any HandedOverSink {
        precondition(endCall != nil, "only a server's responses can be handed over")
        state.withLock { $0.handOverLimit = bufferLimit }
        return self
    }

    var handedOver: (any HandedOverSink)? {
        state.withLock { $0.handOverLimit } == nil ? nil : self
    }

    func send(_ message: [UInt8]) -> Bool {
        let (accepted, mustKick, overflowed) = state.withLock { state -> (Bool, Bool, Bool) in
            guard state.failure == nil, state.end == nil, let limit = state.handOverLimit else { return (false, false, false) }
            if state.buffered + message.count + MessageFraming.prefixLength > limit { return (false, false, true) }
            state.messages.append(message)
            state.buffered += message.count + MessageFraming.prefixLength
            state.wroteAny = true
            let mustKick = state.needsKick
            state.needsKick = false
            return (true, mustKick, false)
        }
        if mustKick { kick() }
        if overflowed { endCall?(RPCError(.resourceExhausted, "the client is not reading its responses"), true) }
        return accepted
    }

    func finish(_ status: RPCError) {
        endCall?(status, false)
    }

    func whenEnded(_ action: @escaping @Sendable (RPCError) -> Void) {
        let final = state.withLock { state -> RPCError? in
            if state.finalStatus == nil { state.endActions.append(action) }
            return state.finalStatus
        }
        if let final { action(final) }
    }

    /// The call is over with `status`: the `whenEnded` actions run, once.
    func ended(_ status: RPCError) {
        let actions = state.withLock { state -> [@Sendable (RPCError) -> Void] in
            guard state.finalStatus == nil else { return [] }
            state.finalStatus = status
            defer { state.endActions = [] }
            return state.endActions
        }
        for action in actions { action(status) }
    }

    // MARK: - Writing

    func write(_ message: [UInt8]) async throws(RPCError) {
        let (failure, mustKick, mustWait) = state.withLock { state -> (RPCError?, Bool, Bool) in
            if let failure = state.failure { return (failure, false, false) }
            if state.end != nil { return (RPCError(.internal, "a message was written after the stream ended"), false, false) }
            state.messages.append(message)
            state.buffered += message.count + MessageFraming.prefixLength
            state.wroteAny = true
            let mustKick = state.needsKick
            state.needsKick = false
            return (nil, mustKick, state.buffered > StreamBuffering.highWater)
        }
        if let failure { throw failure }
        if mustKick { kick() }
        guard mustWait else { return }
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<RPCError?, Never>) in
            let immediate = state.withLock { state -> RPCError?? in
                if let failure = state.failure { return .some(failure) }
                if state.buffered <= StreamBuffering.lowWater { return .some(nil) }
                state.writer = continuation
                return nil
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
        if let outcome { throw outcome }
    }

    /// Ends the sending side once what is queued has gone out.
    func finish(_ end: End) {
        let mustKick = state.withLock { state -> Bool in
            guard state.end == nil, state.failure == nil else { return false }
            state.end = end
            let mustKick = state.needsKick
            state.needsKick = false
            return mustKick
        }
        if mustKick { kick() }
    }

    /// The call is over: drop what is queued, make writers throw `error`; with `end`, the stream
    /// still ends that way (a status after the response headers).
    func fail(_ error: RPCError, end: End? = nil) {
        defer { ended(error) }
        let writer = state.withLock { state -> CheckedContinuation<RPCError?, Never>? in
            if state.failure == nil { state.failure = error }
            state.messages = []
            state.head = 0
            state.offset = 0
            state.buffered = 0
            if let end { state.end = end }
            defer { state.writer = nil }
            return state.writer
        }
        writer?.resume(returning: error)
    }

    /// Whether nothing was ever queued and the end is known (a Trailers-Only response).
    var endsWithoutMessages: End? {
        state.withLock { state in state.wroteAny ? nil : state.end }
    }

    /// Copies framed bytes for a DATA frame, on the loop (nghttp2's data provider).
    func read(into destination: UnsafeMutableRawPointer, capacity: Int) -> ReadResult {
        let (result, writer, messagesDone) = state.withLock { state -> (ReadResult, CheckedContinuation<RPCError?, Never>?, Int) in
            var copied = 0
            var messagesDone = 0
            while copied < capacity, state.head < state.messages.count {
                let message = state.messages[state.head]
                if state.offset < MessageFraming.prefixLength {
                    let prefix = MessageFraming.prefix(for: message.count)
                    let count = min(capacity - copied, MessageFraming.prefixLength - state.offset)
                    prefix.withUnsafeBytes {
                        destination.advanced(by: copied).copyMemory(from: $0.baseAddress! + state.offset, byteCount: count)
                    }
                    copied += count
                    state.offset += count
                }
                let start = state.offset - MessageFraming.prefixLength
                if start < message.count, copied < capacity {
                    let count = min(capacity - copied, message.count - start)
                    message.withUnsafeBytes {
                        destination.advanced(by: copied).copyMemory(from: $0.baseAddress! + start, byteCount: count)
                    }
                    copied += count
                    state.offset += count
                }
                if state.offset == MessageFraming.prefixLength + message.count {
                    state.messages[state.head] = []
                    state.head += 1
                    state.offset = 0
                    messagesDone += 1
                }
            }
            state.buffered -= copied
            if state.head == state.messages.count {
                state.messages.removeAll(keepingCapacity: state.messages.count <= 64)
                state.head = 0
            } else if state.head >= 64 {
                state.messages.removeFirst(state.head)
                state.head = 0
            }
            var writer: CheckedContinuation<RPCError?, Never>?
            if state.buffered <= StreamBuffering.lowWater {
                writer = state.writer
                state.writer = nil
            }
            let drained = state.head == state.messages.count
            if drained, let end = state.end { return (.ended(copied, end), writer, messagesDone) }
            if copied == 0 {
                state.needsKick = true
                return (.empty, writer, messagesDone)
            }
            return (.data(copied), writer, messagesDone)
        }
        writer?.resume(returning: nil)
        if let sent { for _ in 0..<messagesDone { sent() } }
        return result
    }
}

/// The peer's messages on one stream, until the task takes them.
final class StreamInbound: MessageSource {
    private struct State {
        var messages: [[UInt8]] = []
        var head = 0
        var buffered = 0
        var finished = false
        var failure: RPCError?
        var reader: CheckedContinuation<Result<[UInt8]?, RPCError>, Never>?
        /// Set while the connection holds back received bytes: the next drain below `lowWater`
        /// calls `onCredit`.
        var creditWanted = false
    }

    private let state = Mutex(State())
    /// Asks the connection's loop to release the held-back bytes (from any thread).
    private let onCredit: @Sendable () -> Void

    init(onCredit: @escaping @Sendable () -> Void) { self.onCredit = onCredit }

    func next() async throws(RPCError) -> [UInt8]? {
        let (ready, credit) = state.withLock { state -> (Result<[UInt8]?, RPCError>?, Bool) in
            Self.take(&state)
        }
        if credit { onCredit() }
        if let ready { return try ready.get() }
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<[UInt8]?, RPCError>, Never>) in
            let (ready, credit) = state.withLock { state -> (Result<[UInt8]?, RPCError>?, Bool) in
                let taken = Self.take(&state)
                if taken.0 == nil { state.reader = continuation }
                return taken
            }
            if credit { onCredit() }
            if let ready { continuation.resume(returning: ready) }
        }
        return try result.get()
    }

    /// The next message, the end, or the failure if one is there; nil when the reader must wait.
    private static func take(_ state: inout State) -> (Result<[UInt8]?, RPCError>?, Bool) {
        if state.head < state.messages.count {
            let message = state.messages[state.head]
            state.messages[state.head] = []
            state.head += 1
            if state.head == state.messages.count {
                state.messages.removeAll(keepingCapacity: true)
                state.head = 0
            }
            state.buffered -= message.count
            var credit = false
            if state.creditWanted, state.buffered <= StreamBuffering.lowWater {
                state.creditWanted = false
                credit = true
            }
            return (.success(message), credit)
        }
        if let failure = state.failure { return (.failure(failure), false) }
        if state.finished { return (.success(nil), false) }
        return (nil, false)
    }

    /// Queues a message (on the loop). Returns true when the queue is past `highWater`: the
    /// connection then holds back what it receives until `onCredit`.
    func push(_ message: [UInt8]) -> Bool {
        let (reader, full) = state.withLock { state -> (CheckedContinuation<Result<[UInt8]?, RPCError>, Never>?, Bool) in
            guard state.failure == nil, !state.finished else { return (nil, false) }
            if let reader = state.reader {
                state.reader = nil
                return (reader, false)
            }
            state.messages.append(message)
            state.buffered += message.count
            let full = state.buffered > StreamBuffering.highWater
            if full { state.creditWanted = true }
            return (nil, full)
        }
        reader?.resume(returning: .success(message))
        return full
    }

    /// The peer finished sending: readers get nil after the queued messages.
    func finish() {
        let reader = state.withLock { state -> CheckedContinuation<Result<[UInt8]?, RPCError>, Never>? in
            guard state.failure == nil else { return nil }
            state.finished = true
            defer { state.reader = nil }
            return state.reader
        }
        reader?.resume(returning: .success(nil))
    }

    /// The call is over: readers get `error`, after the queued messages when `keepingQueued`
    /// (a status that follows the messages), else at once.
    func fail(_ error: RPCError, keepingQueued: Bool = false) {
        let reader = state.withLock { state -> CheckedContinuation<Result<[UInt8]?, RPCError>, Never>? in
            guard state.failure == nil, !state.finished || state.head < state.messages.count else { return nil }
            state.failure = error
            if !keepingQueued {
                state.messages = []
                state.head = 0
                state.buffered = 0
            }
            defer { state.reader = nil }
            return state.reader
        }
        reader?.resume(returning: .failure(error))
    }
}
