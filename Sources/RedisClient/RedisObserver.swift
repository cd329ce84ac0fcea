// What the client tells an observer (metrics) about its commands: each command's outcome and
// time, reconnections, a cluster's redirects, and how its read cache answers.
//
// As the gRPC server does it, the observer makes one recorder for the client's loop, and the
// client calls it on that loop only, so a recorder counts in plain memory. A command is timed
// from when its connection sends it to its reply (or failure); one failed without being sent
// (Redis is down: the client fails fast) is told without a time. The blocking reads of a
// `RedisBlockingConnection` and subscriptions are not told: their time is a wait, not a latency.
import EventLoop

/// Watches a client's commands; given to `RedisClient(observer:)`.
public protocol RedisObserver: Sendable {
    /// The recorder for the client running on `loop`, which calls it on that loop only.
    func makeRecorder(loop: EventLoop) -> any RedisRecorder
}

/// How a command ended, as a recorder is told.
public enum RedisCommandOutcome: Sendable {
    case reply
    /// An error reply; its first word (ERR, NOSCRIPT, BUSYGROUP...).
    case errorReply(Substring)
    case failure(RedisError.Kind)
}

/// A client's commands, on its loop's thread only.
public protocol RedisRecorder: AnyObject {
    /// A command (`name`: its first argument, e.g. FCALL) ended after `duration` (nil: it was
    /// never sent).
    func completed(_ name: [UInt8], _ outcome: RedisCommandOutcome, duration: Duration?)
    /// A connection that had worked is working again.
    func reconnected()
    /// A cluster node sent a command elsewhere (MOVED, or ASK when `ask`).
    func redirected(ask: Bool)
    /// A read through the client's cache was answered from it (`hit`) or had to run.
    func cacheRead(hit: Bool)
}
