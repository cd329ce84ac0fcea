// Pub/Sub on a connection of its own (a subscribed connection can run nothing else).
//
// Design: a loop-confined `Subscriber` owns a `ConnectionManager` and re-issues SUBSCRIBE every
// time the manager reports a ready connection (in a cluster the manager picks the next known
// node on each connect, since plain Pub/Sub is cluster-wide; with Sentinel it finds the master); hiredis routes the confirmations and messages to
// `events.push`. Events reach the consumer through an AsyncStream (unbounded buffer: a slow
// consumer costs memory, never a lost message while connected). Messages published while the
// connection was down are lost by Redis Pub/Sub itself, which is why the stream says
// `.connectionLost` and `.resubscribed`: the consumer can catch up from a durable source (a
// Redis Stream) after `.resubscribed`.
//
// Lifetime: the subscriber keeps itself alive (its connection's callbacks point at it) until
// `close()` or cancellation of the iterating task ends the stream.
import EventLoop

/// The messages of a subscription, as an AsyncSequence. It ends after `close()`, or when the
/// task iterating it is cancelled, which also unsubscribes and closes its connection.
public struct RedisSubscription: AsyncSequence, Sendable {
    public enum Event: Sendable, Equatable {
        case message(channel: String, payload: [UInt8])
        /// The connection dropped; messages published until `.resubscribed` are missed.
        case connectionLost(RedisError)
        /// Subscribed again after `.connectionLost`.
        case resubscribed
    }

    public typealias Element = Event
    public typealias Failure = Never

    private let stream: AsyncStream<Event>
    private let subscriber: LoopBound<Subscriber>

    public func makeAsyncIterator() -> AsyncStream<Event>.Iterator {
        stream.makeAsyncIterator()
    }

    /// Unsubscribes: closes the connection and ends the sequence.
    public func close() {
        let subscriber = self.subscriber
        subscriber.loop.execute { subscriber.value.close() }
    }

    /// Subscribes over `connection`, a new one of its own that is not started yet.
    static func open(channels: [String], connection: ConnectionManager) async throws(RedisError) -> RedisSubscription {
        let (stream, continuation) = AsyncStream<Event>.makeStream()
        let loop = connection.loop
        let subscriber = LoopBound(Subscriber(channels: channels, manager: connection, events: continuation), loop: loop)
        continuation.onTermination = { _ in
            subscriber.loop.execute { subscriber.value.close() }
        }
        let subscribed = await withUnsafeContinuation { confirmed in
            loop.execute { subscriber.value.start(confirmed) }
        }
        try subscribed.get()
        return RedisSubscription(stream: stream, subscriber: subscriber)
    }
}

extension RedisSubscription.Event {
    /// The payload of a message as UTF-8 text.
    public var text: String? {
        if case .message(_, let payload) = self { return String(decoding: payload, as: UTF8.self) }
        return nil
    }
}

/// Loop-confined state of one subscription.
final class Subscriber {
    private let channels: [String]
    private let manager: ConnectionManager
    private let events: AsyncStream<RedisSubscription.Event>.Continuation
    private let configuration: RedisConfiguration
    /// The first subscribe, awaiting Redis's confirmation.
    private var opening: UnsafeContinuation<Result<Void, RedisError>, Never>?
    private var openingTimer: TimerID?
    private var unconfirmed = 0
    private var keepAlive: Subscriber?

    init(channels: [String], manager: ConnectionManager, events: AsyncStream<RedisSubscription.Event>.Continuation) {
        self.channels = channels
        self.configuration = manager.configuration
        self.events = events
        self.manager = manager
        manager.events = ConnectionEvents(
            ready: { [unowned self] in subscribe() },
            failed: { [unowned self] error, wasReady in connectionFailed(error, wasReady: wasReady) },
            push: { [unowned self] reply in received(reply) }
        )
    }

    func start(_ confirmed: UnsafeContinuation<Result<Void, RedisError>, Never>) {
        keepAlive = self
        opening = confirmed
        let limit = configuration.connectTimeout + configuration.commandTimeout
        openingTimer = manager.loop.schedule(after: limit) { [unowned self] in
            openingTimer = nil
            finishOpening(.failure(RedisError(.timeout, endpoint: configuration.endpoint, detail: "SUBSCRIBE not confirmed within \(limit)")))
        }
        manager.start()
    }

    func close() {
        guard keepAlive != nil else { return }
        finishOpening(.failure(RedisError(.unavailable, endpoint: configuration.endpoint, detail: "subscription closed")))
        manager.close()
        events.finish()
        keepAlive = nil
    }

    private func subscribe() {
        unconfirmed = channels.count
        manager.sendUnanswered((["SUBSCRIBE"] + channels).map { Array($0.utf8) })
    }

    private func received(_ reply: RedisReply) {
        guard let parts = reply.array, parts.count == 3, let kind = parts[0].string else { return }
        switch kind {
        case "message":
            events.yield(.message(channel: parts[1].string ?? "", payload: parts[2].bytes ?? []))
        case "subscribe":
            unconfirmed -= 1
            guard unconfirmed == 0 else { return }
            if opening != nil {
                finishOpening(.success(()))
            } else {
                events.yield(.resubscribed)
            }
        default:
            break
        }
    }

    private func connectionFailed(_ error: RedisError, wasReady: Bool) {
        if opening != nil {
            finishOpening(.failure(error))
        } else if wasReady {
            events.yield(.connectionLost(error))
        }
    }

    /// Ends the first subscribe; a failed one also ends the subscription.
    private func finishOpening(_ result: Result<Void, RedisError>) {
        guard let opening else { return }
        self.opening = nil
        if let openingTimer { manager.loop.cancel(openingTimer) }
        openingTimer = nil
        opening.resume(returning: result)
        if case .failure = result { close() }
    }
}
