// Live events for watchers: one blocking reader per partition's stream per process, however many
// watchers there are (10,000 open WatchOrder calls are `OrderPartition.count` Redis connections
// and as many XREADs at a time, not 10,000 of either).
//
// The readers start with the first subscription: each reads its stream's last id, then loops on
// `XREAD BLOCK` from its position, so an event reaches the hub as soon as Redis has it; the hub is
// ready once every reader has its position. Each
// event is routed by its fields to the subscriptions of its topics (the order, its restaurant,
// its driver and, on a reassignment, the previous driver). Subscribing and dispatching take the
// same lock, so a subscription receives every event the hub dispatches after `subscribe`
// returned, and none before: every event it misses has an id at or below the position the hub
// had reached in that event's stream when it subscribed. A watcher that reads its snapshot after
// subscribing therefore sees each later change exactly once, by skipping the events its snapshot
// already reflects (compare their ids with the snapshot's, within the stream of the order).
//
// A subscription buffers at most `bufferLimit` events; a watcher that falls that far behind (its
// client stopped reading) is ended with RESOURCE_EXHAUSTED instead of growing without bound.
// A watcher that should cost no task while it waits `follow`s instead: the hub hands each event
// to its `EventFollower` right after dispatching (outside the lock, from the partition's reader,
// so an order's events arrive one at a time and in stream order), and the follower bounds what
// it keeps itself.
// After Redis errors the reader retries from the same position, so a blip loses nothing.
import Logging
import RedisClient
import RPCCore
import Synchronization

/// Routes the event stream to the watchers of one process.
public final class EventHub: Sendable {
    /// What a watcher follows.
    public enum Topic: Hashable, Sendable {
        case order(String)
        case restaurant(String)
        case driver(String)
    }

    /// Events a subscription may hold unread before it is ended.
    public static let bufferLimit = 1024

    /// How a subscriber takes its events.
    private enum Subscriber {
        case sequence(AsyncStream<PlatformEvent>.Continuation, EventSubscription.Ending)
        case follower(any EventFollower)

        /// Ends it with `error`: no more events.
        func end(_ error: RPCError) {
            switch self {
            case .sequence(let continuation, let ending):
                ending.set(error)
                continuation.finish()
            case .follower(let follower):
                follower.hubEnded(error)
            }
        }
    }

    private struct State {
        var subscribers: [Topic: [Int: Subscriber]] = [:]
        var nextID = 0
        /// Per partition index: how far its reader has dispatched.
        var positions = [StreamID?](repeating: nil, count: OrderPartition.count)
        var started = false
        var stopped = false
        var readyWaiters: [CheckedContinuation<RPCError?, Never>] = []

        var isReady: Bool { positions.allSatisfy { $0 != nil } }
    }

    private let redis: RedisClient
    private let logger: Logger
    private let state = Mutex(State())
    private let readers = Mutex<[Task<Void, Never>]>([])

    public init(redis: RedisClient, logger: Logger) {
        self.redis = redis
        self.logger = logger
    }

    /// Follows `topic` from now on. Throws UNAVAILABLE when Redis cannot be read.
    public func subscribe(_ topic: Topic) async throws(RPCError) -> EventSubscription {
        let (events, continuation) = AsyncStream<PlatformEvent>.makeStream(bufferingPolicy: .bufferingOldest(Self.bufferLimit))
        let ending = EventSubscription.Ending()
        let registration = HubRegistration(onCancel: try await add(.sequence(continuation, ending), to: topic))
        return EventSubscription(events: events, ending: ending, registration: registration)
    }

    /// Hands `topic`'s events to `follower` from now on, until the returned registration is
    /// cancelled (or released). Throws UNAVAILABLE when Redis cannot be read.
    public func follow(_ topic: Topic, with follower: any EventFollower) async throws(RPCError) -> HubRegistration {
        HubRegistration(onCancel: try await add(.follower(follower), to: topic))
    }

    /// Registers `subscriber` once the readers have their positions; returns what forgets it.
    private func add(_ subscriber: Subscriber, to topic: Topic) async throws(RPCError) -> @Sendable () -> Void {
        startReaderIfNeeded()
        let failure = await withCheckedContinuation { (continuation: CheckedContinuation<RPCError?, Never>) in
            let ready = state.withLock { state -> RPCError?? in
                if state.stopped { return .some(RPCError(.unavailable, "the server is shutting down")) }
                if state.isReady { return .some(nil) }
                state.readyWaiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        if let failure { throw failure }
        let id = state.withLock { state -> Int? in
            guard !state.stopped else { return nil }
            state.nextID += 1
            state.subscribers[topic, default: [:]][state.nextID] = subscriber
            return state.nextID
        }
        guard let id else { throw RPCError(.unavailable, "the server is shutting down") }
        return { [weak self] in
            self?.state.withLock { state in
                state.subscribers[topic]?[id] = nil
                if state.subscribers[topic]?.isEmpty == true { state.subscribers[topic] = nil }
            }
        }
    }

    /// Ends every subscription with UNAVAILABLE and stops reading (the server is going away).
    public func shutdown() {
        let (subscribers, waiters) = state.withLock { state -> ([Subscriber], [CheckedContinuation<RPCError?, Never>]) in
            state.stopped = true
            defer {
                state.subscribers = [:]
                state.readyWaiters = []
            }
            return (state.subscribers.values.flatMap(\.values), state.readyWaiters)
        }
        for subscriber in subscribers { subscriber.end(RPCError(.unavailable, "the server is shutting down")) }
        for waiter in waiters { waiter.resume(returning: RPCError(.unavailable, "the server is shutting down")) }
        readers.withLock { $0.forEach { $0.cancel() } }
    }

    /// The number of open subscriptions (for tests and logs).
    public var subscriptionCount: Int {
        state.withLock { $0.subscribers.values.reduce(0) { $0 + $1.count } }
    }

    private func startReaderIfNeeded() {
        let start = state.withLock { state -> Bool in
            guard !state.started, !state.stopped else { return false }
            state.started = true
            return true
        }
        guard start else { return }
        readers.withLock { $0 = OrderPartition.all.map { partition in Task { await self.read(partition) } } }
    }

    private func read(_ partition: OrderPartition) async {
        let connection = redis.makeBlockingConnection()
        defer { connection.close() }
        var delay: Duration = .milliseconds(50)
        while !Task.isCancelled {
            do throws(RedisError) {
                guard let position = state.withLock({ $0.positions[partition.index] }) else {
                    let last = try await connection.send(["XREVRANGE", partition.stream, "+", "-", "COUNT", "1"])
                    let id = last.array?.first?.array?.first?.string.flatMap(StreamID.init) ?? .zero
                    reached(id, in: partition)
                    continue
                }
                let reply = try await connection.send([
                    "XREAD", "COUNT", "1000", "BLOCK", "1000", "STREAMS", partition.stream, position.description,
                ])
                delay = .milliseconds(50)
                dispatch(Self.entries(of: reply), in: partition)
            } catch {
                if !Task.isCancelled {
                    logger.warning("reading events for watchers failed, retrying", metadata: ["error": "\(error)"])
                    failWaiters(RPCError(storage: error))
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    /// A reader has its first position: once all have, the waiting subscribers go ahead.
    private func reached(_ position: StreamID, in partition: OrderPartition) {
        let waiters = state.withLock { state -> [CheckedContinuation<RPCError?, Never>] in
            state.positions[partition.index] = position
            guard state.isReady else { return [] }
            defer { state.readyWaiters = [] }
            return state.readyWaiters
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    private func failWaiters(_ error: RPCError) {
        let waiters = state.withLock { state -> [CheckedContinuation<RPCError?, Never>] in
            defer { state.readyWaiters = [] }
            return state.readyWaiters
        }
        for waiter in waiters { waiter.resume(returning: error) }
    }

    /// (id, event) pairs of an XREAD reply, in order; entries that are not events keep their id.
    private static func entries(of reply: RedisReply) -> [(StreamID, PlatformEvent?)] {
        guard let streams = reply.array, let stream = streams.first?.array, stream.count == 2,
              let entries = stream[1].array else { return [] }
        return entries.compactMap { entry in
            guard let parts = entry.array, parts.count == 2, let text = parts[0].string, let id = StreamID(text) else { return nil }
            return (id, PlatformEvent(entryID: text, fields: (parts[1].array ?? []).map(\.string)))
        }
    }

    private func dispatch(_ entries: [(StreamID, PlatformEvent?)], in partition: OrderPartition) {
        guard let last = entries.last?.0 else { return }
        let (overflowed, followed) = state.withLock { state -> ([Subscriber], [(any EventFollower, PlatformEvent)]) in
            state.positions[partition.index] = last
            var overflowed: [Subscriber] = []
            var followed: [(any EventFollower, PlatformEvent)] = []
            for case let (_, event?) in entries {
                for topic in Self.topics(of: event) {
                    guard let subscribers = state.subscribers[topic] else { continue }
                    for subscriber in subscribers.values {
                        switch subscriber {
                        case .sequence(let continuation, _):
                            if case .dropped = continuation.yield(event) { overflowed.append(subscriber) }
                        case .follower(let follower):
                            followed.append((follower, event))
                        }
                    }
                }
            }
            return (overflowed, followed)
        }
        for subscriber in overflowed {
            subscriber.end(RPCError(.resourceExhausted, "the watcher fell more than \(Self.bufferLimit) events behind"))
        }
        for (follower, event) in followed { follower.receive(event) }
    }

    private static func topics(of event: PlatformEvent) -> [Topic] {
        var topics: [Topic] = [.order(event.orderID)]
        if let restaurant = event.restaurantID { topics.append(.restaurant(restaurant)) }
        if let driver = event.driverID { topics.append(.driver(driver)) }
        if let previous = event.previousDriverID, previous != event.driverID { topics.append(.driver(previous)) }
        return topics
    }
}

/// Takes a followed topic's events as the hub dispatches them (`EventHub.follow`): in stream
/// order for an order's topic, from its partition's reader; a topic that spans partitions (a
/// restaurant, a driver) may be handed events by several readers at once.
public protocol EventFollower: AnyObject, Sendable {
    func receive(_ event: PlatformEvent)
    /// The hub stopped (the server is going away): no more events.
    func hubEnded(_ error: RPCError)
}

/// A subscriber's place in the hub: `cancel` (or releasing it) takes it out.
public final class HubRegistration: Sendable {
    private let onCancel: @Sendable () -> Void
    private let cancelled = Atomic<Bool>(false)

    init(onCancel: @escaping @Sendable () -> Void) { self.onCancel = onCancel }

    deinit { cancel() }

    public func cancel() {
        if !cancelled.exchange(true, ordering: .relaxed) { onCancel() }
    }
}

/// The events of one topic from the moment of subscribing, in stream order. Ends with the
/// hub's reason (shutdown, too slow) as an error; `cancel` (or the task's cancellation) ends it.
public final class EventSubscription: AsyncSequence, Sendable {
    public typealias Element = PlatformEvent
    public typealias Failure = RPCError

    /// Why the hub ended a subscription, set before it finishes the stream.
    final class Ending: Sendable {
        private let reason = Mutex<RPCError?>(nil)
        func set(_ error: RPCError) { reason.withLock { if $0 == nil { $0 = error } } }
        var error: RPCError? { reason.withLock { $0 } }
    }

    private let events: AsyncStream<PlatformEvent>
    private let ending: Ending
    private let registration: HubRegistration

    init(events: AsyncStream<PlatformEvent>, ending: Ending, registration: HubRegistration) {
        self.events = events
        self.ending = ending
        self.registration = registration
    }

    /// Stops following; the hub forgets the subscription (as it does when this is released).
    public func cancel() { registration.cancel() }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(events: events.makeAsyncIterator(), ending: ending)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var events: AsyncStream<PlatformEvent>.Iterator
        let ending: Ending

        public mutating func next() async throws(RPCError) -> PlatformEvent? {
            if let event = await events.next() { return event }
            if let error = ending.error { throw error }
            if Task.isCancelled { throw RPCError(.cancelled, "the call was cancelled") }
            return nil
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(RPCError) -> PlatformEvent? {
            if let event = await events.next(isolation: actor) { return event }
            if let error = ending.error { throw error }
            if Task.isCancelled { throw RPCError(.cancelled, "the call was cancelled") }
            return nil
        }
    }
}
