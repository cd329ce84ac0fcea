// What the delivery service keeps, in its own terms, and the Redis store that keeps it.
//
// DeliveryServiceLogic is written against `DeliveryStore`: each operation answers a domain
// outcome (assigned, not found, not accepted, already delivered, ...) or throws a `StorageError`,
// and the service alone turns those into gRPC statuses (tested without a server in
// DeliveryLogicUnitTests). `RedisDeliveryStore` keeps what DeliveryServiceLogic's header
// describes: the per-order records in the orders' partitions and the driver pool in `{drivers}`,
// each operation one function of the service's Lua library (Lua/*.lua) on DeliveryKeys.
import PlatformCommon
import RedisClient

/// The delivery service's storage.
public protocol DeliveryStore: Sendable {
    /// A number no assignment has had (`assignment_<n>`), also across replicas and failovers.
    func nextAssignmentNumber() async throws(StorageError) -> Int64
    /// Gives an accepted, undelivered order to `driver` as assignment `assignment`, replacing its
    /// open assignment, with DRIVER_ASSIGNED. Any other outcome changed nothing.
    func assign(_ order: String, to driver: String, as assignment: String) async throws(StorageError) -> AssignOutcome
    /// Moves the order's current assignment to `stage`, with DELIVERY_STATUS.
    func update(_ order: String, to stage: DeliveryStatus) async throws(StorageError) -> UpdateOutcome
    /// The driver's assignments, oldest first, with the id of the last event applied to each:
    /// those numbered after `after` (all when nil), at most `limit` (all when nil).
    func assignments(of driver: String, after: Int64?, limit: Int?) async throws(StorageError) -> [AssignmentRecord]
    /// The driver of the order's current assignment.
    func currentDriver(of order: String) async throws(StorageError) -> String?
    /// Follows the order service's events (of one partition) on the orders, and gives each
    /// accepted order a driver once.
    func applyOrderEvents(_ events: [PlatformEvent], in partition: OrderPartition) async throws(StorageError) -> AppliedOrderEvents
    /// How many accepted orders wait for a driver on shift.
    func waitingCount() async throws(StorageError) -> Int
    /// Applies the service's own events (assignments, stages) to the driver pool.
    func applyAssignmentEvents(_ events: [PlatformEvent]) async throws(StorageError)
    /// Puts a driver on shift or off (it keeps its assignments).
    func setAvailability(_ driver: String, onShift: Bool) async throws(StorageError)
    /// Puts the pool's drivers (DRIVERS) that were never seen before on shift.
    func enlistPool() async throws(StorageError)
    /// Takes orders off the waiting list (canceled, or given a driver by hand).
    func stopWaiting(_ orders: [String]) async throws(StorageError)
    /// Gives the waiting orders, oldest first, the least loaded drivers on shift; returns how many
    /// were assigned.
    func assignWaiting() async throws(StorageError) -> Int
}

/// What applying a batch of the order service's events did.
public struct AppliedOrderEvents: Sendable, Equatable {
    /// Assignments recorded now (a replayed event records none).
    public var recorded = 0
    /// The drivers claimed for the batch's accepted orders (now or by an earlier replay).
    public var claimed: [AutomaticAssignment] = []

    public init(recorded: Int = 0, claimed: [AutomaticAssignment] = []) {
        self.recorded = recorded
        self.claimed = claimed
    }
}

/// A driver given to an accepted order by the service.
public struct AutomaticAssignment: Sendable, Equatable {
    public var order: String
    public var driver: String
    public var assignment: String
}

public enum AssignOutcome: Sendable, Equatable {
    case assigned
    case notFound
    /// The order is known, in this status, and was never accepted.
    case notAccepted(String)
    case delivered
    case canceled
    /// More unapplied events than the store looks through: catch up, then ask again.
    case behind
}

public enum UpdateOutcome: Sendable, Equatable {
    case updated
    case noAssignment
    case delivered
    /// The current assignment failed: the order needs a new one first.
    case failed
    case canceled
    case behind
}

/// One of a driver's assignments.
public struct AssignmentRecord: Sendable, Equatable {
    public var id: String
    public var order: String
    public var status: String
    /// The last event applied to it; nil when it is known only from its claim.
    public var lastEvent: StreamID?
    /// Its number (`assignment_<n>`): the driver's list is ordered by it.
    public var number: Int64 = 0
}

/// Deliveries in Redis.
public struct RedisDeliveryStore: DeliveryStore {
    private let redis: RedisClient
    /// The service's consumer group, whose unapplied events assign and update look through.
    private let consumerGroup: String
    /// The drivers that start on shift (DRIVERS).
    private let pool: [String]

    public init(redis: RedisClient, pool: [String], consumerGroup: String) {
        self.redis = redis
        self.pool = pool
        self.consumerGroup = consumerGroup
    }

    public func nextAssignmentNumber() async throws(StorageError) -> Int64 {
        // With WAIT, so that a failover cannot hand the same number out again.
        let reply: RedisReply
        do { reply = try await redis.send(["INCR", DeliveryKeys.assignmentSequence], waitForReplicas: true) } catch { throw StorageError(error) }
        guard let number = reply.int else { throw StorageError(.failed, "INCR \(DeliveryKeys.assignmentSequence) answered \(reply)") }
        return number
    }

    public func assign(_ order: String, to driver: String, as assignment: String) async throws(StorageError) -> AssignOutcome {
        let parts = try await onRecord(Scripts.assign, order: order, arguments: [order, assignment, driver, consumerGroup])
        switch (parts.first, parts.count) {
        case ("ASSIGNED", 1): return .assigned
        case ("NOT_FOUND", 1): return .notFound
        case ("NOT_ACCEPTED", 2): return .notAccepted(parts[1])
        case ("DELIVERED", 1): return .delivered
        case ("CANCELED", 1): return .canceled
        case (PlatformEvents.behind, 1): return .behind
        default: throw StorageError(.failed, "assign answered \(parts)")
        }
    }

    public func update(_ order: String, to stage: DeliveryStatus) async throws(StorageError) -> UpdateOutcome {
        let parts = try await onRecord(Scripts.update, order: order, arguments: [order, stage.rawValue, consumerGroup])
        switch parts {
        case ["UPDATED"]: return .updated
        case ["NO_ASSIGNMENT"]: return .noAssignment
        case ["DELIVERED"]: return .delivered
        case ["FAILED"]: return .failed
        case ["CANCELED"]: return .canceled
        case [PlatformEvents.behind]: return .behind
        default: throw StorageError(.failed, "update answered \(parts)")
        }
    }

    /// Runs a change on the order's record (KEYS: the record, the partition's stream).
    private func onRecord(_ function: LuaFunction, order: String, arguments: [String]) async throws(StorageError) -> [String] {
        let reply = try await redis.run(function, keys: [DeliveryKeys.order(order), OrderPartition(order: order).stream],
                                        arguments: arguments, change: true)
        return (reply.array ?? []).map { $0.string ?? "" }
    }

    public func assignments(of driver: String, after: Int64?, limit: Int?) async throws(StorageError) -> [AssignmentRecord] {
        let flat = try await redis.run(Scripts.assignments, keys: [
            DeliveryKeys.assignments(of: driver), DeliveryKeys.assignmentOrder, DeliveryKeys.assignmentStatus,
            DeliveryKeys.assignmentEvent,
        ], arguments: [after.map { "\($0)" } ?? "", limit.map { "\($0)" } ?? ""], change: false).array ?? []
        return stride(from: 0, to: flat.count - 4, by: 5).map { index in
            AssignmentRecord(id: flat[index].string ?? "", order: flat[index + 1].string ?? "", status: flat[index + 2].string ?? "",
                             lastEvent: StreamID(flat[index + 3].string ?? ""), number: flat[index + 4].string.flatMap { Int64($0) } ?? 0)
        }
    }

    public func currentDriver(of order: String) async throws(StorageError) -> String? {
        try await redis.run(Scripts.currentDriver, keys: [DeliveryKeys.order(order)], change: false).string
    }

    /// Claims in the pool (idempotent per order), then records on the order with its event, once;
    /// an accepted order waits while nobody is on shift, and a canceled one stops waiting.
    public func applyOrderEvents(_ events: [PlatformEvent], in partition: OrderPartition) async throws(StorageError) -> AppliedOrderEvents {
        var announced: [(event: PlatformEvent, status: OrderStatus, id: StreamID)] = []
        for event in events where event.kind.isOrderServiceEvent {
            guard let id = event.id, let status = event.announcedStatus else { continue }
            announced.append((event, status, id))
        }
        guard !announced.isEmpty else { return AppliedOrderEvents() }
        let canceled = Set(announced.filter { $0.event.kind == .orderCanceled }.map(\.event.orderID))
        if !canceled.isEmpty { try await stopWaiting(Array(canceled)) }
        // An order canceled in this very batch gets no driver.
        var accepted: [WaitingOrder] = []
        for item in announced where item.event.kind == .orderAccepted && !canceled.contains(item.event.orderID)
            && !accepted.contains(where: { $0.order == item.event.orderID }) {
            accepted.append(WaitingOrder(order: item.event.orderID, accepted: item.id, restaurant: item.event.restaurantID ?? "",
                                         customer: item.event.customerID ?? ""))
        }
        var claims: [String: Claim] = [:]
        var candidates: [String] = []
        var waiting = 0
        if !accepted.isEmpty {
            candidates = try await driversOnShift()
            // Nobody on shift: maybe nobody was ever put on or off shift here (a Redis that lost
            // its data); the pool's drivers start on shift then, as at start.
            if candidates.isEmpty { candidates = try await shift("ENLIST", pool).onShift }
            (claims, waiting) = try await claim(accepted, fromWaiting: false, candidates: candidates)
        }
        var arguments: [String] = []
        for item in announced {
            let claim = item.event.kind == .orderAccepted ? claims[item.event.orderID] : nil
            arguments += [item.event.orderID, item.status.rawValue, item.id.description, claim?.assignment ?? "", claim?.driver ?? "",
                          item.event.restaurantID ?? "", item.event.customerID ?? ""]
        }
        let recorded = try await redis.run(Scripts.applyOrderEvents,
                                           keys: [partition.stream] + announced.map { DeliveryKeys.order($0.event.orderID) },
                                           arguments: arguments, change: true)
        // A replayed acceptance of an order that waited: recorded now, so off the list.
        if waiting > 0, !claims.isEmpty { try await stopWaiting(Array(claims.keys)) }
        // Orders waiting from before while a driver is on shift (a drain that did not finish):
        // they go first.
        let drained = waiting > 0 && !candidates.isEmpty ? try await assignWaiting() : 0
        let claimed = accepted.compactMap { order in
            claims[order.order].map { AutomaticAssignment(order: order.order, driver: $0.driver, assignment: $0.assignment) }
        }
        return AppliedOrderEvents(recorded: Int(recorded.int ?? 0) + drained, claimed: claimed)
    }

    public func waitingCount() async throws(StorageError) -> Int {
        do { return Int(try await redis.send(["ZCARD", DeliveryKeys.waiting]).int ?? 0) } catch { throw StorageError(error) }
    }

    public func setAvailability(_ driver: String, onShift: Bool) async throws(StorageError) {
        _ = try await shift(onShift ? "ON" : "OFF", [driver])
    }

    public func enlistPool() async throws(StorageError) {
        _ = try await shift("ENLIST", pool)
    }

    public func assignWaiting() async throws(StorageError) -> Int {
        var assigned = 0
        while true {
            let (candidates, waiting) = try await shift("READ", [])
            guard !candidates.isEmpty, !waiting.isEmpty else { return assigned }
            let (claims, _) = try await claim(waiting, fromWaiting: true, candidates: candidates)
            let claimed = waiting.filter { claims[$0.order] != nil }
            for (partition, orders) in Dictionary(grouping: claimed, by: { OrderPartition(order: $0.order) }) {
                var arguments: [String] = []
                for order in orders {
                    let claim = claims[order.order]
                    arguments += [order.order, OrderStatus.accepted.rawValue, order.accepted.description, claim?.assignment ?? "",
                                  claim?.driver ?? "", order.restaurant, order.customer]
                }
                let recorded = try await redis.run(Scripts.applyOrderEvents,
                                                   keys: [partition.stream] + orders.map { DeliveryKeys.order($0.order) },
                                                   arguments: arguments, change: true)
                assigned += Int(recorded.int ?? 0)
            }
            // Recorded: off the waiting list (a crash before this leaves them on it, and the next
            // round finds their claims and records nothing twice).
            if !claimed.isEmpty { try await stopWaiting(claimed.map(\.order)) }
            if waiting.count < Self.waitingBatch || claimed.isEmpty { return assigned }
        }
    }

    /// How many waiting orders one round of assignWaiting takes (shift.lua's limit).
    static let waitingBatch = 256

    /// An accepted order to give a driver: its ORDER_ACCEPTED's id, restaurant and customer.
    struct WaitingOrder {
        var order: String
        var accepted: StreamID
        var restaurant: String
        var customer: String
    }

    typealias Claim = (assignment: String, driver: String)

    private func driversOnShift() async throws(StorageError) -> [String] {
        // Sorted: between drivers equally loaded, the first by name gets the order.
        do { return (try await redis.send(["SMEMBERS", DeliveryKeys.onShift]).array ?? []).compactMap(\.string).sorted() } catch {
            throw StorageError(error)
        }
    }

    /// Claims the least loaded of `candidates` still on shift for each order (idempotent); an
    /// order waits (no claim) while nobody is. Returns the claims and how many orders wait.
    public func stopWaiting(_ orders: [String]) async throws(StorageError) {
        guard !orders.isEmpty else { return }
        do {
            _ = try await redis.transaction([["ZREM", DeliveryKeys.waiting] + orders, ["HDEL", DeliveryKeys.waitingDetails] + orders])
        } catch { throw StorageError(error) }
    }

    private func claim(_ orders: [WaitingOrder], fromWaiting: Bool,
                       candidates: [String]) async throws(StorageError) -> (claims: [String: Claim], waiting: Int) {
        let reply = try await redis.run(
            Scripts.claim,
            keys: [DeliveryKeys.claims, DeliveryKeys.assignmentSequence, DeliveryKeys.assignmentOrder, DeliveryKeys.assignmentDriver,
                   DeliveryKeys.assignmentStatus, DeliveryKeys.onShift, DeliveryKeys.waiting, DeliveryKeys.waitingDetails]
                + candidates.flatMap { [DeliveryKeys.openAssignments(of: $0), DeliveryKeys.assignments(of: $0)] },
            arguments: [fromWaiting ? "WAITING" : "NEW", String(candidates.count)] + candidates
                + orders.flatMap { [$0.order, $0.accepted.description, $0.restaurant, $0.customer] },
            change: true).array ?? []
        guard reply.count == 2 * orders.count + 1, let waiting = reply.last?.int else {
            throw StorageError(.failed, "claiming drivers answered \(reply)")
        }
        var claims: [String: Claim] = [:]
        for (index, order) in orders.enumerated() {
            let assignment = reply[2 * index].string ?? ""
            if !assignment.isEmpty { claims[order.order] = (assignment, reply[2 * index + 1].string ?? "") }
        }
        return (claims, Int(waiting))
    }

    /// Runs shift.lua: the drivers on shift after the change, and the oldest waiting orders.
    private func shift(_ mode: String, _ drivers: [String]) async throws(StorageError) -> (onShift: [String], waiting: [WaitingOrder]) {
        let flat = (try await redis.run(Scripts.shift, keys: [DeliveryKeys.onShift, DeliveryKeys.knownDrivers, DeliveryKeys.waiting,
                                                              DeliveryKeys.waitingDetails],
                                        arguments: [mode] + drivers, change: true).array ?? []).map { $0.string ?? "" }
        guard let bar = flat.firstIndex(of: "|") else { throw StorageError(.failed, "shift answered \(flat)") }
        let waiting = stride(from: bar + 1, to: flat.count - 1, by: 2).compactMap { index -> WaitingOrder? in
            let details = flat[index + 1].split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard details.count == 3, let accepted = StreamID(details[0]) else { return nil }
            return WaitingOrder(order: flat[index], accepted: accepted, restaurant: details[1], customer: details[2])
        }
        return (flat[..<bar].sorted(), waiting)
    }

    public func applyAssignmentEvents(_ events: [PlatformEvent]) async throws(StorageError) {
        var keys = DeliveryKeys.assignmentHashes
        var arguments: [String] = []
        for event in events {
            guard let id = event.id, let assignment = event.assignmentID, let driver = event.driverID else { continue }
            let status: String
            switch event.kind {
            case .driverAssigned: status = DeliveryStatus.assigned.rawValue
            case .deliveryStatus: status = event.detail ?? ""
            default: continue
            }
            let previousDriver = event.previousAssignmentID == nil ? driver : event.previousDriverID ?? driver
            keys += [DeliveryKeys.openAssignments(of: driver), DeliveryKeys.assignments(of: driver),
                     DeliveryKeys.openAssignments(of: previousDriver), DeliveryKeys.assignments(of: previousDriver)]
            arguments += [id.description, assignment, event.orderID, driver, status,
                          event.previousAssignmentID ?? "", event.previousDriverID ?? ""]
        }
        if !arguments.isEmpty { _ = try await redis.run(Scripts.applyAssignmentEvents, keys: keys, arguments: arguments, change: true) }
    }
}

/// The delivery service's keys: per order in the order's partition, the pool in `{drivers}`.
enum DeliveryKeys {
    /// Hash: order_status, order_event, accepted, auto_assigned, restaurant, customer,
    /// assignment, driver, assignment_status.
    static func order(_ id: String) -> String { "delivery:\(OrderPartition(order: id).tag):order:\(id)" }

    /// Hash: order id -> its automatic assignment.
    static let claims = "delivery:{drivers}:claims"
    /// Counter behind `assignment_<n>`.
    static let assignmentSequence = "delivery:{drivers}:assignment:seq"
    /// Hashes: assignment id -> its order, driver, status, last event applied.
    static let assignmentOrder = "delivery:{drivers}:assignment:order"
    static let assignmentDriver = "delivery:{drivers}:assignment:driver"
    static let assignmentStatus = "delivery:{drivers}:assignment:status"
    static let assignmentEvent = "delivery:{drivers}:assignment:event"
    static let assignmentHashes = [assignmentOrder, assignmentDriver, assignmentStatus, assignmentEvent]
    /// Sorted set: the driver's assignments, by number (oldest first).
    static func assignments(of driver: String) -> String { "delivery:{drivers}:driver:\(driver):assignments" }
    /// Counter: the driver's open assignments (least loaded gets the next automatic one).
    static func openAssignments(of driver: String) -> String { "delivery:{drivers}:driver:\(driver):active" }
    /// Set: the drivers on shift, who take automatic assignments.
    static let onShift = "delivery:{drivers}:on-shift"
    /// Set: every driver put on or off shift, or enlisted, ever (a restart keeps their shifts).
    static let knownDrivers = "delivery:{drivers}:known"
    /// Sorted set: accepted orders waiting for a driver on shift, by acceptance (oldest first);
    /// hash: per waiting order the id of its ORDER_ACCEPTED, its restaurant and customer.
    static let waiting = "delivery:{drivers}:waiting"
    static let waitingDetails = "delivery:{drivers}:waiting:details"
}

/// The functions the store runs: the service's Lua/*.lua as one library.
enum Scripts {
    /// `REASSIGNED` and `closed[status]` (DeliveryServiceLogic.closedStatuses).
    private static let assignmentLua = "local REASSIGNED = '\(DeliveryServiceLogic.reassigned)'\n"
        + "local CANCELED = '\(DeliveryServiceLogic.canceled)'\nlocal closed = {"
        + DeliveryServiceLogic.closedStatuses.map { "\($0) = true" }.joined(separator: ", ") + "}"
    static let library = LuaLibrary(
        module: "delivery", helpers: [assignmentLua, EventLua.unapplied],
        functions: ["apply_order_events": DeliveryLua.applyOrderEvents, "claim": DeliveryLua.claim, "assign": DeliveryLua.assign,
                    "update": DeliveryLua.update, "current_driver": DeliveryLua.currentDriver,
                    "apply_assignment_events": DeliveryLua.applyAssignmentEvents, "assignments": DeliveryLua.assignments,
                    "shift": DeliveryLua.shift],
        readOnly: ["current_driver", "assignments"])
    static let applyOrderEvents = library.function("apply_order_events")
    static let claim = library.function("claim")
    static let assign = library.function("assign")
    static let update = library.function("update")
    static let currentDriver = library.function("current_driver")
    static let applyAssignmentEvents = library.function("apply_assignment_events")
    static let assignments = library.function("assignments")
    static let shift = library.function("shift")
}
