// The slot map of one Redis Cluster, shared by all routers of a client (the pipelined one, the
// WATCH one, one per blocking connection) and by its subscriptions. Loop-confined.
//
// Design: the map is read over a control connection of its own, from one node at a time: the
// node that answered last time, then the known masters, then the seeds, so a dead node costs one
// refused connect. CLUSTER SHARDS first, CLUSTER SLOTS if the node refuses it. One read is in
// flight at a time; a refresh asked for meanwhile is served by it. Between reads, MOVED replies
// patch single slots. `version` counts full reads, so routers can drop their connections to
// nodes that stopped being masters.
import EventLoop

final class ClusterTopology {
    let configuration: RedisConfiguration
    let loop: EventLoop
    private let seeds: [RedisEndpoint]
    private(set) var map: SlotMap?
    private(set) var version = 0
    private var control: (node: RedisEndpoint, connection: ConnectionManager)?
    private var isReading = false
    private var waiting: [(Result<SlotMap, RedisError>) -> Void] = []
    private var subscriptionTurn = 0
    private var isClosed = false

    init(seeds: [RedisEndpoint], configuration: RedisConfiguration, loop: EventLoop) {
        self.seeds = seeds
        self.configuration = configuration
        self.loop = loop
    }

    /// Calls back with the map, reading it first when there is none yet.
    func withMap(_ body: @escaping (Result<SlotMap, RedisError>) -> Void) {
        if let map { return body(.success(map)) }
        waiting.append(body)
        refresh()
    }

    /// Reads the whole map again, unless a read is under way.
    func refresh() {
        guard !isReading, !isClosed else { return }
        isReading = true
        var candidates = control.map { [$0.node] } ?? []
        for node in knownNodes where !candidates.contains(node) { candidates.append(node) }
        read(from: candidates[...], lastError: nil)
    }

    /// A MOVED reply: that slot has a new master (the next full read confirms the rest).
    func learn(_ redirect: Redirect) {
        map?.assign(redirect.slot...redirect.slot, to: redirect.target)
    }

    /// The masters known now, then the seeds.
    var knownNodes: [RedisEndpoint] {
        let masters = map?.masters ?? []
        return masters + seeds.filter { !masters.contains($0) }
    }

    /// For a subscription (plain Pub/Sub is cluster-wide): each call names the next known node,
    /// so a reconnect after a node died tries another one.
    func nodeForSubscription(_ report: @escaping (Result<RedisEndpoint, RedisError>) -> Void) {
        let nodes = knownNodes
        guard !nodes.isEmpty else {
            return report(.failure(RedisError(.unavailable, endpoint: configuration.endpoint, detail: "no cluster node known")))
        }
        subscriptionTurn += 1
        report(.success(nodes[subscriptionTurn % nodes.count]))
    }

    func close() {
        isClosed = true
        control?.connection.close()
        control = nil
        finish(.failure(RedisError(.unavailable, endpoint: configuration.endpoint, detail: "client closed")))
    }

    // MARK: - Reading the map

    private func read(from candidates: ArraySlice<RedisEndpoint>, lastError: RedisError?) {
        guard !isClosed else { return }
        guard let node = candidates.first else {
            return finish(.failure(lastError ?? RedisError(.unavailable, endpoint: configuration.endpoint, detail: "no cluster node known")))
        }
        let connection = control?.node == node ? control!.connection : ConnectionManager(configuration: configuration.node(node), loop: loop)
        query(["CLUSTER", "SHARDS"], on: connection) { [self] shards in
            if case .success(let reply) = shards, let map = SlotMap(shards: reply, asked: node) {
                return adopt(map, from: node, over: connection)
            }
            guard case .success(.error) = shards else {
                return giveUp(on: node, connection, candidates: candidates, error: shards)
            }
            query(["CLUSTER", "SLOTS"], on: connection) { [self] slots in
                if case .success(let reply) = slots, let map = SlotMap(slots: reply, asked: node) {
                    return adopt(map, from: node, over: connection)
                }
                giveUp(on: node, connection, candidates: candidates, error: slots)
            }
        }
    }

    private func query(_ command: [String], on connection: ConnectionManager, _ done: @escaping (Result<RedisReply, RedisError>) -> Void) {
        connection.send(command.map { Array($0.utf8) }, PendingCommand(.handler { result, _ in done(result) }))
    }

    private func adopt(_ map: SlotMap, from node: RedisEndpoint, over connection: ConnectionManager) {
        if control?.node != node {
            control?.connection.close()
            control = (node, connection)
        }
        self.map = map
        version += 1
        finish(.success(map))
    }

    private func giveUp(on node: RedisEndpoint, _ connection: ConnectionManager, candidates: ArraySlice<RedisEndpoint>,
                        error: Result<RedisReply, RedisError>) {
        if control?.node == node { control = nil }
        connection.close()
        let failure: RedisError = switch error {
        case .failure(let failure): failure
        case .success(.error(let message)): RedisError(.server(message), endpoint: node.description, detail: "no slot map")
        case .success: RedisError(.server("unreadable slot map"), endpoint: node.description, detail: "no slot map")
        }
        read(from: candidates.dropFirst(), lastError: failure)
    }

    private func finish(_ result: Result<SlotMap, RedisError>) {
        isReading = false
        let waiters = waiting
        waiting = []
        for waiter in waiters { waiter(result) }
    }
}
