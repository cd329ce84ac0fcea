// Keeps one logical Redis connection alive: connect, handshake, pipeline, time out, reconnect.
// Loop-confined; the public types talk to it only through `EventLoop.execute`.
//
// States: (resolving ->) connecting -> handshaking (AUTH, then SELECT, then ROLE) -> ready; any
// failure -> waiting to retry (backoff doubling from reconnectInitialDelay to
// reconnectMaximumDelay) -> connecting. After a *working* connection drops, the first reconnect
// starts at once.
//
// Where to connect is the configured host and port, or, for a `.discovered` target, an address
// asked for anew before every attempt (the master Sentinel names, a live cluster node for a
// subscription). A target that must be a master is checked with ROLE in the handshake, and a
// READONLY or LOADING reply drops the connection: the master moved, so look for it again.
//
// Fail fast: commands wait for a connection only during the first attempt after start or after
// a drop (usually a millisecond on a LAN). Once an attempt has failed, Redis counts as down and
// commands fail at once with the last failure, instead of piling up behind the backoff.
//
// Timeouts: hiredis 0.14 has none. Every connection has one command timeout and replies come in
// order, so the oldest unanswered command always has the earliest deadline: one loop timer,
// armed for the head of the in-flight queue, is enough. A timed-out command fails with
// `.timeout` but stays in hiredis's callback queue, so its late reply still lands on it (and is
// ignored) and later replies stay aligned; the connection is kept. Only when nothing at all was
// received since the timed-out command was sent is the connection considered dead and dropped,
// which makes a silently vanished server reconnect instead of timing out forever.
import EventLoop
import Synchronization

/// One command awaiting its reply, and how to hand the reply over.
final class PendingCommand {
    enum Completion {
        /// A caller awaiting the reply.
        case caller(UnsafeContinuation<Result<RedisReply, RedisError>, Never>)
        /// Our own follow-up (handshake, WATCH, a cluster router): gets the command too, to read
        /// its `generation` and `wasWritten`.
        case handler((Result<RedisReply, RedisError>, PendingCommand) -> Void)
    }

    private var completion: Completion?
    /// The recorder to tell of the outcome, the command's name and when it was sent.
    var observation: (recorder: any RedisRecorder, name: [UInt8], sent: ContinuousClock.Instant)?
    var deadline = ContinuousClock.Instant.now
    var generation = 0
    var repliesBeforeSend: UInt64 = 0
    /// Handed to hiredis on a live connection: it may have run even if no reply comes. A command
    /// failed without this was never sent, so it is safe to send again elsewhere.
    fileprivate(set) var wasWritten = false

    init(_ completion: Completion) { self.completion = completion }

    var isCompleted: Bool { completion == nil }

    func complete(_ result: Result<RedisReply, RedisError>) {
        guard let completion else { return }
        self.completion = nil
        if let observation {
            let outcome: RedisCommandOutcome = switch result {
            case .success(.error(let message)): .errorReply(message.prefix { $0 != " " })
            case .success: .reply
            case .failure(let error): .failure(error.kind)
            }
            observation.recorder.completed(observation.name, outcome, duration: .now - observation.sent)
        }
        switch completion {
        case .caller(let continuation): continuation.resume(returning: result)
        case .handler(let handler): handler(result, self)
        }
    }
}

/// Where a manager connects.
enum ConnectionTarget {
    /// The configuration's host and port.
    case configured
    /// An address found by `find` before every attempt; `label` names it in errors until then.
    /// With `mustBeMaster`, the handshake checks ROLE and READONLY/LOADING replies drop the
    /// connection.
    case discovered(label: String, mustBeMaster: Bool, find: (@escaping (Result<RedisEndpoint, RedisError>) -> Void) -> Void)
}

/// What `RedisClient` sends commands through: one connection, or a cluster router over many.
/// Loop-confined.
protocol CommandSink: AnyObject {
    /// Connects unless already started (a router connects lazily instead).
    func start()
    /// Sends commands back to back; with `generation`, only on that very connection.
    func send(batch: [[[UInt8]]], _ commands: [PendingCommand], generation: Int?)
    /// Stops for good: pending and later commands fail with `.unavailable`.
    func close()
}

extension CommandSink {
    func send(_ arguments: [[UInt8]], _ command: PendingCommand, generation: Int? = nil) {
        send(batch: [arguments], [command], generation: generation)
    }
}

/// Hooks for a connection owner that needs more than request/reply (the subscriber).
struct ConnectionEvents {
    /// The connection is ready (after AUTH/SELECT).
    var ready: () -> Void = {}
    /// An attempt failed or a ready connection was lost; `wasReady` tells which.
    var failed: (_ error: RedisError, _ wasReady: Bool) -> Void = { _, _ in }
    /// A reply no command asked for (Pub/Sub messages and confirmations).
    var push: (RedisReply) -> Void = { _ in }
}

/// A self-healing, pipelined connection to one Redis server.
final class ConnectionManager: HiredisConnectionDelegate, CommandSink {
    private enum State {
        case idle
        case resolving
        case connecting(HiredisConnection, timer: TimerID)
        case handshaking(HiredisConnection)
        case ready(HiredisConnection)
        case waitingToRetry(TimerID)
        case closed
    }

    let configuration: RedisConfiguration
    let loop: EventLoop
    private let target: ConnectionTarget
    private let recorder: (any RedisRecorder)?
    /// A connection was ready once: the next ready one is a reconnection.
    private var wasEverReady = false
    /// The server as "host:port" (or the target's label before the first attempt), for errors.
    private var endpoint: String
    var events = ConnectionEvents()
    private var state = State.idle
    /// Commands accepted while the first attempt connects; sent in order once ready.
    private var waiting: [(arguments: [[UInt8]], command: PendingCommand)] = []
    private var inFlight = FIFO<PendingCommand>()
    private var timeoutTimer: TimerID?
    private var repliesReceived: UInt64 = 0
    private var consecutiveFailures = 0
    private var lastFailure: RedisError
    /// Set when AUTH/SELECT was refused, reported when that connection has closed.
    private var refusal: RedisError?
    /// Names the ready connection, unique across all managers (a cluster router finds the
    /// manager a WATCH was sent on by it): state tied to one connection checks it did not change.
    private(set) var generation = 0
    private static let generations = Atomic<Int>(0)

    init(configuration: RedisConfiguration, loop: EventLoop, target: ConnectionTarget = .configured,
         recorder: (any RedisRecorder)? = nil) {
        self.configuration = configuration
        self.loop = loop
        self.target = target
        self.recorder = recorder
        if case .discovered(let label, _, _) = target { endpoint = label } else { endpoint = configuration.endpoint }
        lastFailure = RedisError(.unavailable, endpoint: endpoint, detail: "not connected yet")
    }

    private var mustBeMaster: Bool {
        if case .discovered(_, true, _) = target { return true }
        return false
    }

    /// Connects unless already started.
    func start() {
        if case .idle = state { connect() }
    }

    /// Sends commands back to back: nothing else is sent between them (MULTI ... EXEC).
    func send(batch: [[[UInt8]]], _ commands: [PendingCommand], generation required: Int?) {
        switch state {
        case .ready(let connection) where required == nil || required == generation:
            for (arguments, command) in zip(batch, commands) { submit(arguments, command, on: connection) }
        case .idle, .resolving, .connecting, .handshaking:
            if required == nil, consecutiveFailures == 0 {
                waiting.append(contentsOf: zip(batch, commands).map { ($0, $1) })
                start()
            } else {
                fail(batch, commands, with: required == nil ? lastFailure : connectionReset)
            }
        case .ready:
            fail(batch, commands, with: connectionReset)
        case .waitingToRetry:
            fail(batch, commands, with: lastFailure)
        case .closed:
            fail(batch, commands, with: RedisError(.unavailable, endpoint: endpoint, detail: "client closed"))
        }
    }

    /// Sends a command whose replies arrive through `events.push` (SUBSCRIBE).
    func sendUnanswered(_ arguments: [[UInt8]]) {
        if case .ready(let connection) = state { _ = connection.send(arguments, for: nil) }
    }

    /// Drops the current connection (if any) and reconnects with backoff.
    func reset(reason: String) {
        switch state {
        case .connecting(let connection, _), .handshaking(let connection), .ready(let connection):
            connection.close(reason: reason)
        default: break
        }
    }

    /// Stops for good: pending and later commands fail with `.unavailable`.
    func close() {
        let previous = state
        state = .closed
        if let timeoutTimer { loop.cancel(timeoutTimer) }
        timeoutTimer = nil
        switch previous {
        case .connecting(let connection, let timer):
            loop.cancel(timer)
            connection.close(reason: "client closed")
        case .handshaking(let connection), .ready(let connection):
            connection.close(reason: "client closed")
        case .waitingToRetry(let timer):
            loop.cancel(timer)
        case .idle, .resolving, .closed:
            break
        }
        failWaiting(with: RedisError(.unavailable, endpoint: endpoint, detail: "client closed"))
    }

    private var connectionReset: RedisError {
        RedisError(.unavailable, endpoint: endpoint, detail: "connection was reset during the transaction")
    }

    // MARK: - Connecting

    private func connect() {
        guard case .discovered(_, _, let find) = target else {
            return connect(to: RedisEndpoint(host: configuration.host, port: configuration.port))
        }
        state = .resolving
        find { [self] found in
            guard case .resolving = state else { return }  // closed meanwhile
            switch found {
            case .success(let address): connect(to: address)
            case .failure(let error): attemptFailed(error, wasReady: false)
            }
        }
    }

    private func connect(to address: RedisEndpoint) {
        endpoint = address.description
        let connection = HiredisConnection(loop: loop, delegate: self)
        if let reason = connection.connect(host: address.host, port: address.port) {
            attemptFailed(RedisError(.unavailable, endpoint: endpoint, detail: "cannot connect: \(reason)"), wasReady: false)
            return
        }
        let timeout = configuration.connectTimeout
        let timer = loop.schedule(after: timeout) {
            connection.close(reason: "connect timed out after \(timeout)")
        }
        state = .connecting(connection, timer: timer)
    }

    func connectionDidConnect(_ connection: HiredisConnection) {
        guard case .connecting(let current, let timer) = state, current === connection else { return }
        loop.cancel(timer)
        state = .handshaking(connection)
        var steps: [[String]] = []
        if let password = configuration.password { steps.append(["AUTH", password]) }
        if configuration.database != 0 { steps.append(["SELECT", String(configuration.database)]) }
        if mustBeMaster { steps.append(["ROLE"]) }
        handshake(steps[...], on: connection)
    }

    /// Runs AUTH, SELECT and ROLE one after the other, so a refused AUTH is the error reported.
    private func handshake(_ steps: ArraySlice<[String]>, on connection: HiredisConnection) {
        guard let step = steps.first else { return becameReady(connection) }
        let command = PendingCommand(.handler { [self] result, _ in
            guard case .handshaking(let current) = state, current === connection else { return }
            switch result {
            case .success(.error(let message)):
                refusal = RedisError(.authentication(message), endpoint: endpoint, detail: "\(step[0]) refused")
                connection.close(reason: message)
            case .success(let reply) where step == ["ROLE"] && reply.array?.first?.string != "master":
                // Sentinel named a server that is not (or no longer) the master: ask again.
                connection.close(reason: "not the master (ROLE \(reply.array?.first?.string ?? "?"))")
            case .success:
                handshake(steps.dropFirst(), on: connection)
            case .failure:
                break  // the connection is going away; connectionDidClose reports it
            }
        })
        submit(step.map { Array($0.utf8) }, command, on: connection)
    }

    private func becameReady(_ connection: HiredisConnection) {
        if wasEverReady { recorder?.reconnected() }
        wasEverReady = true
        state = .ready(connection)
        consecutiveFailures = 0
        generation = Self.generations.add(1, ordering: .relaxed).newValue
        let queued = waiting
        waiting = []
        for (arguments, command) in queued { submit(arguments, command, on: connection) }
        events.ready()
    }

    func connectionDidClose(_ connection: HiredisConnection, reason: String) {
        let wasReady: Bool
        switch state {
        case .ready(let current) where current === connection: wasReady = true
        case .handshaking(let current) where current === connection: wasReady = false
        case .connecting(let current, let timer) where current === connection:
            loop.cancel(timer)
            wasReady = false
        default: return  // closed, or an old connection
        }
        inFlight.removeAll()
        if let refusal {
            self.refusal = nil
            attemptFailed(refusal, wasReady: false)
        } else {
            let detail = wasReady ? "connection lost: \(reason)" : "cannot connect: \(reason)"
            attemptFailed(RedisError(.unavailable, endpoint: endpoint, detail: detail), wasReady: wasReady)
        }
    }

    private func attemptFailed(_ error: RedisError, wasReady: Bool) {
        lastFailure = error
        failWaiting(with: error)
        let delay: Duration
        if wasReady {
            consecutiveFailures = 0
            delay = .zero
        } else {
            consecutiveFailures += 1
            delay = configuration.reconnectDelay(afterFailures: consecutiveFailures)
        }
        // Reconnect from a timer, never from inside hiredis's free routine.
        state = .waitingToRetry(loop.schedule(after: delay) { [self] in
            if case .waitingToRetry = state { connect() }
        })
        events.failed(error, wasReady)
    }

    private func failWaiting(with error: RedisError) {
        let queued = waiting
        waiting = []
        fail(queued.map(\.arguments), queued.map(\.command), with: error)
    }

    /// Fails commands that were never sent (the recorder hears of them, without a latency).
    private func fail(_ batch: [[[UInt8]]], _ commands: [PendingCommand], with error: RedisError) {
        for (arguments, command) in zip(batch, commands) {
            recorder?.completed(arguments.first ?? [], .failure(error.kind), duration: nil)
            command.complete(.failure(error))
        }
    }

    // MARK: - Replies and timeouts

    private func submit(_ arguments: [[UInt8]], _ command: PendingCommand, on connection: HiredisConnection) {
        let now = ContinuousClock.now
        command.deadline = now + configuration.commandTimeout
        if let recorder, command.observation == nil { command.observation = (recorder, arguments.first ?? [], now) }
        command.generation = generation
        command.repliesBeforeSend = repliesReceived
        command.wasWritten = connection.send(arguments, for: command)
        guard command.wasWritten else {
            command.complete(.failure(RedisError(.unavailable, endpoint: endpoint, detail: "connection lost: \(connection.failureReason)")))
            return
        }
        inFlight.append(command)
        armTimeoutTimer()
    }

    func connection(_ connection: HiredisConnection, received reply: RedisReply?, for command: PendingCommand?) {
        guard let reply else {
            command?.complete(.failure(RedisError(.unavailable, endpoint: endpoint, detail: "connection lost: \(connection.failureReason)")))
            return
        }
        repliesReceived &+= 1
        guard let command else { return events.push(reply) }
        if mustBeMaster, case .error(let message) = reply, message.hasPrefix("READONLY") || message.hasPrefix("LOADING") {
            // The server was demoted (or is still loading after a restart): not run, and the
            // master is elsewhere now.
            command.complete(.failure(RedisError(.unavailable, endpoint: endpoint, detail: message)))
            reset(reason: message)
        } else {
            command.complete(.success(reply))
        }
        while let head = inFlight.first, head.isCompleted { inFlight.removeFirst() }
    }

    private func armTimeoutTimer() {
        guard timeoutTimer == nil, let head = inFlight.first else { return }
        timeoutTimer = loop.schedule(after: ContinuousClock.now.duration(to: head.deadline)) { [self] in
            timeoutTimer = nil
            expireCommands()
        }
    }

    private func expireCommands() {
        let now = ContinuousClock.now
        var connectionSilent = false
        while let head = inFlight.first, head.isCompleted || head.deadline <= now {
            inFlight.removeFirst()
            guard !head.isCompleted else { continue }
            connectionSilent = connectionSilent || head.repliesBeforeSend == repliesReceived
            head.complete(.failure(RedisError(.timeout, endpoint: endpoint,
                                              detail: "no reply within \(configuration.commandTimeout)")))
        }
        if connectionSilent {
            reset(reason: "no reply for \(configuration.commandTimeout)")
        }
        armTimeoutTimer()
    }
}

/// A queue with O(1) amortised removal at the front.
struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var first: Element? { head < storage.count ? storage[head] : nil }

    mutating func append(_ element: Element) { storage.append(element) }

    mutating func removeFirst() {
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024, head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
    }

    mutating func removeAll() {
        storage.removeAll()
        head = 0
    }
}
