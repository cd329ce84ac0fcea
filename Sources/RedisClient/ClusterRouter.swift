// Sends each command to the master that serves its key's slot, and follows the cluster's
// answers when the map was out of date. Loop-confined; one per pipelined connection set (the
// client's shared one, its WATCH one, each blocking connection), all over one `ClusterTopology`.
//
// Design: one `ConnectionManager` per master, opened on first use, so each node gets the same
// pipelined, self-reconnecting connection a standalone client has. A batch (MULTI ... EXEC, a
// script and its WAIT) is routed by its first key and sent contiguously on one connection.
// What happens to the replies:
// - MOVED: the slot has moved for good: patch the map, read the whole map again in the
//   background, and resend to the node named.
// - ASK: the key is being migrated: send ASKING and the batch, back to back, to the node named,
//   without touching the map.
// - TRYAGAIN, CLUSTERDOWN, or a node that cannot be reached while the command was not sent:
//   read the map again and resend after a short backoff.
// Resending is bounded by `commandTimeout` from the first send and by `redirectLimit`; past
// them the command fails with `.unavailable` (the cluster is still moving). A command
// that was written to a connection that then dropped may have run, so it is never resent: it
// fails with `.unavailable` as on a single server (and the map is read again).
import EventLoop

final class ClusterRouter: CommandSink {
    private static let redirectLimit = 16

    private final class Routed {
        let batch: [[[UInt8]]]
        let commands: [PendingCommand]
        let slot: Int?
        let deadline: ContinuousClock.Instant
        var attempts = 0
        var ask: RedisEndpoint?

        init(batch: [[[UInt8]]], commands: [PendingCommand], slot: Int?, deadline: ContinuousClock.Instant) {
            (self.batch, self.commands, self.slot, self.deadline) = (batch, commands, slot, deadline)
        }
    }

    /// One result per command of a batch, with the generation of the connection it came from.
    private typealias Outcome = [(result: Result<RedisReply, RedisError>, generation: Int)]

    private let topology: ClusterTopology
    private let recorder: (any RedisRecorder)?
    private var nodes: [RedisEndpoint: ConnectionManager] = [:]
    private var mapVersion = 0
    private var isClosed = false

    init(topology: ClusterTopology, recorder: (any RedisRecorder)?) {
        self.topology = topology
        self.recorder = recorder
    }

    /// Nothing to do: a node's connection opens when the first command for it comes.
    func start() {}

    func send(batch: [[[UInt8]]], _ commands: [PendingCommand], generation: Int?) {
        guard !isClosed else { return complete(commands, failing: closedError) }
        if let generation {
            // Inside a WATCH transaction: only the connection that holds the WATCH will do.
            guard let node = nodes.values.first(where: { $0.generation == generation }) else {
                return complete(commands, failing: RedisError(.unavailable, endpoint: topology.configuration.endpoint,
                                                              detail: "connection was reset during the transaction"))
            }
            return node.send(batch: batch, commands, generation: generation)
        }
        let slot = CommandKeys.firstKey(ofBatch: batch).map { RedisHashSlot.of($0) }
        dispatch(Routed(batch: batch, commands: commands, slot: slot, deadline: .now + topology.configuration.commandTimeout))
    }

    func close() {
        isClosed = true
        for connection in nodes.values { connection.close() }
        nodes = [:]
    }

    // MARK: - Routing

    private func dispatch(_ routed: Routed) {
        topology.withMap { [self] found in
            guard !isClosed else { return complete(routed.commands, failing: closedError) }
            let map: SlotMap
            switch found {
            case .success(let current): map = current
            case .failure(let error): return complete(routed.commands, failing: error)  // no node answered at all
            }
            dropFormerMasters(map)
            let owner = if let slot = routed.slot { map.master(forSlot: slot) } else { map.anyMaster }
            guard let node = routed.ask ?? owner else {
                topology.refresh()
                let error = RedisError(.unavailable, endpoint: topology.configuration.endpoint, detail: "no master serves slot \(routed.slot ?? -1)")
                return retry(routed, after: backoff(routed), otherwise: routed.commands.map { _ in (.failure(error), 0) })
            }
            let asking = routed.ask != nil
            routed.ask = nil
            let batch = asking ? [[Array("ASKING".utf8)]] + routed.batch : routed.batch
            var replies: [(result: Result<RedisReply, RedisError>, command: PendingCommand)] = []
            let inner = batch.map { _ in
                PendingCommand(.handler { [self] result, command in
                    replies.append((result, command))
                    if replies.count == batch.count { handle(routed, Array(replies.dropFirst(asking ? 1 : 0)), from: node) }
                })
            }
            connection(to: node).send(batch: batch, inner, generation: nil)
        }
    }

    private func handle(_ routed: Routed, _ replies: [(result: Result<RedisReply, RedisError>, command: PendingCommand)], from node: RedisEndpoint) {
        let outcome: Outcome = replies.map { ($0.result, $0.command.generation) }
        for (result, _) in replies {
            switch result {
            case .failure(let error) where error.kind == .unavailable:
                topology.refresh()  // the node may be gone
                if replies.contains(where: { $0.command.wasWritten }) { return complete(routed.commands, outcome) }
                return retry(routed, after: backoff(routed), otherwise: outcome)
            case .failure:
                return complete(routed.commands, outcome)  // a timeout: it may have run
            case .success(.error(let message)):
                // Out of time or redirects, the cluster is still moving: "try later", not a bug.
                let unsettled = RedisError(.unavailable, endpoint: node.description, detail: message)
                let giveUp: Outcome = routed.commands.map { _ in (.failure(unsettled), 0) }
                if let redirect = Redirect(message, from: node) {
                    recorder?.redirected(ask: redirect.kind == .ask)
                    switch redirect.kind {
                    case .moved:
                        topology.learn(redirect)
                        topology.refresh()
                    case .ask:
                        routed.ask = redirect.target
                    }
                    return retry(routed, after: .zero, otherwise: giveUp)
                }
                if message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN") {
                    topology.refresh()
                    return retry(routed, after: backoff(routed), otherwise: giveUp)
                }
            case .success:
                break
            }
        }
        complete(routed.commands, outcome)
    }

    /// Sends again after `delay`, or gives up with `outcome` when out of time or redirects.
    private func retry(_ routed: Routed, after delay: Duration, otherwise outcome: Outcome) {
        routed.attempts += 1
        guard routed.attempts <= Self.redirectLimit, .now + delay < routed.deadline else {
            return complete(routed.commands, outcome)
        }
        if delay == .zero {
            dispatch(routed)
        } else {
            topology.loop.schedule(after: delay) { [self] in dispatch(routed) }
        }
    }

    /// 20 ms doubling to 500 ms: a failover takes the cluster a few seconds.
    private func backoff(_ routed: Routed) -> Duration {
        min(.milliseconds(10 << min(routed.attempts + 1, 6)), .milliseconds(500))
    }

    private func connection(to node: RedisEndpoint) -> ConnectionManager {
        if let connection = nodes[node] { return connection }
        let connection = ConnectionManager(configuration: topology.configuration.node(node), loop: topology.loop, recorder: recorder)
        nodes[node] = connection
        return connection
    }

    /// After a full read of the map, closes connections to nodes that are no longer masters
    /// (a failed master would otherwise be reconnected to forever).
    private func dropFormerMasters(_ map: SlotMap) {
        guard mapVersion != topology.version else { return }
        mapVersion = topology.version
        for (node, connection) in nodes where !map.masters.contains(node) {
            connection.close()
            nodes[node] = nil
        }
    }

    private var closedError: RedisError {
        RedisError(.unavailable, endpoint: topology.configuration.endpoint, detail: "client closed")
    }

    private func complete(_ commands: [PendingCommand], _ outcome: Outcome) {
        for (command, (result, generation)) in zip(commands, outcome) {
            command.generation = generation
            command.complete(result)
        }
    }

    private func complete(_ commands: [PendingCommand], failing error: RedisError) {
        for command in commands { command.complete(.failure(error)) }
    }
}
