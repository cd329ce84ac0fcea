// DeliveryService: drivers and assignments in Redis, every change an atomic Lua script (Lua/*.lua).
//
// Two kinds of keys (DeliveryKeys). Per order, a record in the order's partition (its hash tag,
// beside the partition's event stream): the newest status the order service's events announced
// (`order_status`, `order_event`; delivery never reads the order service's keys), whether it was
// accepted and auto-assigned, its restaurant and customer, and its current assignment, driver and
// stage. Every change of a record appends DRIVER_ASSIGNED / DELIVERY_STATUS to the partition's
// stream in the same step, with the driver, the assignment and the order's restaurant and
// customer as fields, so watchers of any of them are reached. And the driver pool, in a slot of
// its own (`{drivers}`): each assignment's order, driver, status and last event, each driver's
// assignments and open-assignment counter (for least-loaded), and the claims of automatic
// assignments. The pool is a projection of the service's own events, applied by its consumer
// like any other.
//
// The service consumes every partition through its consumer group (EventConsumer: replicas share
// the events, in any order). For an ACCEPTED order it claims the least loaded driver in the pool's
// slot (idempotent per order: a replay, a restart, another replica or a crash between the two
// steps gets the same claim back), then records the assignment on the order's record with its
// event (once: `auto_assigned`), in the script that follows the order's announced status. So no order is assigned twice,
// and none is left unassigned. Manual assignment and stages change the record alone, in one step.
//
// WatchDriverAssignments subscribes to the process's EventHub first, catches up, then reads the
// driver's assignments with the id of the last event applied to each: the events at or before
// those are in the snapshot, the later ones are the changes to send.
import Logging
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient

/// The DeliveryService implementation; it also tells the access policy who drives an order.
public struct DeliveryServiceLogic: DeliveryServiceProvider, OrderPartiesLookup {
    /// Who gets automatic assignments when no pool is configured.
    public static let defaultDriver = "driver_auto"
    /// The delivery service's consumer group (its replicas share it).
    static let consumerGroup = "delivery_service"

    private let redis: RedisClient
    private let events: EventConsumer
    private let hub: EventHub
    private let logger: Logger

    /// `drivers`: the pool automatic assignments choose from (least loaded first).
    public init(redis: RedisClient, drivers: [String], logger: Logger) {
        self.redis = redis
        self.logger = logger
        hub = EventHub(redis: redis, logger: logger)
        let pool = drivers.isEmpty ? [Self.defaultDriver] : drivers
        events = EventConsumer(group: Self.consumerGroup, redis: redis, logger: logger) { events, partition throws(RPCError) in
            let assigned = try await Self.assignAccepted(events, in: partition, pool: pool, redis: redis)
            if assigned > 0 { logger.info("drivers assigned automatically", metadata: ["new": "\(assigned)"]) }
            try await Self.projectAssignments(events, redis: redis)
        }
    }

    /// Starts following the events.
    public func start() async { await events.start() }
    /// Ends the watches (the server is about to drain).
    public func endWatches() { hub.shutdown() }
    public func stop() async { await events.stop() }

    public func assignDriver(_ request: AssignDriverRequest, context: ServerContext) async throws -> AssignDriverResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        try Identifier.validate(request.driverId, field: "driver_id")
        // (With WAIT, so that a failover cannot hand the same number out again.)
        guard let number = try await redis.command(["INCR", DeliveryKeys.assignmentSequence], waitForReplicas: true).int else {
            throw RPCError(.internal, "unexpected reply numbering an assignment")
        }
        let reply = try await judged(Scripts.assign, order: request.orderId,
                                     arguments: [request.orderId, "assignment_\(number)", request.driverId])
        guard let fields = reply.array, fields.count == 2, let assignment = fields[0].string else {
            throw RPCError(.internal, "unexpected reply assigning a driver")
        }
        return AssignDriverResponse(assignmentId: assignment, status: DeliveryStatus.assigned.rawValue)
    }

    public func updateDeliveryStatus(_ request: UpdateDeliveryStatusRequest, context: ServerContext) async throws -> UpdateDeliveryStatusResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        guard let status = DeliveryStatus(rawValue: request.status) else {
            throw RPCError(.invalidArgument, "status must be one of \(DeliveryStatus.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let reply = try await judged(Scripts.update, order: request.orderId, arguments: [request.orderId, status.rawValue])
        return UpdateDeliveryStatusResponse(orderId: request.orderId, status: reply.string ?? status.rawValue)
    }

    public func getDriverAssignments(_ request: GetDriverAssignmentsRequest, context: ServerContext) async throws -> GetDriverAssignmentsResponse {
        try Identifier.validate(request.driverId, field: "driver_id")
        try await events.catchUp()
        let flat = try await redis.script(Scripts.list, keys: [
            DeliveryKeys.assignments(of: request.driverId), DeliveryKeys.assignmentOrder, DeliveryKeys.assignmentStatus,
        ]).array ?? []
        let assignments = stride(from: 0, to: flat.count - 2, by: 3).map { index in
            DeliveryAssignment(assignmentId: flat[index].string ?? "", orderId: flat[index + 1].string ?? "",
                               status: flat[index + 2].string ?? "")
        }
        return GetDriverAssignmentsResponse(assignments: assignments)
    }

    public func watchDriverAssignments(
        _ request: WatchDriverAssignmentsRequest, responses: RPCWriter<DriverAssignmentUpdate>, context: ServerContext
    ) async throws {
        let driver = request.driverId
        try Identifier.validate(driver, field: "driver_id")
        let subscription = try await hub.subscribe(.driver(driver))
        defer { subscription.cancel() }
        // Everything the subscription may have missed is applied before the snapshot is read.
        try await events.catchUp()
        let flat = try await redis.script(Scripts.watchSnapshot, keys: [
            DeliveryKeys.assignments(of: driver), DeliveryKeys.assignmentOrder, DeliveryKeys.assignmentStatus,
            DeliveryKeys.assignmentEvent,
        ]).array ?? []
        // Per assignment in the snapshot, the last event it reflects (nil: none yet, only its claim).
        var known: [String: StreamID?] = [:]
        for index in stride(from: 0, to: flat.count - 3, by: 4) {
            let assignment = flat[index].string ?? "", status = flat[index + 2].string ?? ""
            known[assignment] = StreamID(flat[index + 3].string ?? "")
            guard Self.isOpen(status) else { continue }
            try await responses.write(DriverAssignmentUpdate(
                assignmentId: assignment, orderId: flat[index + 1].string ?? "", status: status))
        }
        func isNew(_ assignment: String, _ event: StreamID) -> Bool {
            guard let last = known[assignment] else { return true }
            return last.map { event > $0 } ?? true
        }
        for try await event in subscription {
            guard let id = event.id else { continue }
            let at = Int64(id.milliseconds)
            if event.kind == .driverAssigned, event.previousDriverID == driver, let previous = event.previousAssignmentID,
               isNew(previous, id) {
                try await responses.write(DriverAssignmentUpdate(
                    assignmentId: previous, orderId: event.orderID, status: Self.reassigned, updatedAtUnixMs: at))
            }
            guard event.driverID == driver, let assignment = event.assignmentID else { continue }
            switch event.kind {
            case .driverAssigned where known[assignment] == nil:
                // (An assignment in the snapshot was sent with it: its creation is not news.)
                try await responses.write(DriverAssignmentUpdate(
                    assignmentId: assignment, orderId: event.orderID, status: DeliveryStatus.assigned.rawValue, updatedAtUnixMs: at))
            case .deliveryStatus where isNew(assignment, id):
                try await responses.write(DriverAssignmentUpdate(
                    assignmentId: assignment, orderId: event.orderID, status: event.detail ?? "", updatedAtUnixMs: at))
            default:
                continue
            }
        }
    }

    /// Runs a change script on an order's record (KEYS: the record, the partition's stream) that
    /// judges the order by what the service knows of it. When the answer is no (NOT_FOUND,
    /// FAILED_PRECONDITION), the order may have been accepted or assigned a moment ago, in
    /// events not applied yet: catch up on its partition and ask once more before saying no. The
    /// script changes nothing when it says no, so asking again is safe.
    private func judged(_ script: LuaFunction, order: String, arguments: [String]) async throws(RPCError) -> RedisReply {
        let partition = OrderPartition(order: order)
        let keys = [DeliveryKeys.order(order), partition.stream]
        do throws(RPCError) {
            return try scriptOutcome(await redis.change(script, keys: keys, arguments: arguments))
        } catch where error.code == .notFound || error.code == .failedPrecondition {
            try await events.catchUp(partition)
            return try scriptOutcome(await redis.change(script, keys: keys, arguments: arguments))
        }
    }

    /// The driver of the order's current assignment (the order's other parties are the order
    /// service's to tell).
    public func parties(ofOrder orderID: String, for caller: Caller) async throws(RPCError) -> OrderParties? {
        let reply = try await redis.script(Scripts.currentDriver, keys: [DeliveryKeys.order(orderID)])
        guard let driver = reply.string else { return nil }
        return OrderParties(driver: driver)
    }

    /// An assignment replaced by another of the same order.
    static let reassigned = "REASSIGNED"

    /// The statuses of an assignment that no longer occupies its driver.
    static let closedStatuses = [DeliveryStatus.delivered.rawValue, DeliveryStatus.failed.rawValue, reassigned]

    /// Whether an assignment in this status still occupies its driver.
    static func isOpen(_ status: String) -> Bool { !closedStatuses.contains(status) }

    /// Follows the order service's announcements on the orders' records, and gives each accepted
    /// order a driver: claim in the pool (idempotent per order), then record on the order with
    /// its event, once. Returns how many assignments were recorded now.
    static func assignAccepted(_ events: [PlatformEvent], in partition: OrderPartition, pool: [String],
                               redis: RedisClient) async throws(RPCError) -> Int {
        var announced: [(event: PlatformEvent, status: OrderStatus, id: StreamID)] = []
        for event in events where event.kind.isOrderServiceEvent {
            guard let id = event.id, let status = event.announcedStatus else { continue }
            announced.append((event, status, id))
        }
        guard !announced.isEmpty else { return 0 }
        var accepted: [String] = []
        for item in announced where item.status == .accepted && !accepted.contains(item.event.orderID) {
            accepted.append(item.event.orderID)
        }
        var claims: [String: (assignment: String, driver: String)] = [:]
        if !accepted.isEmpty {
            let reply = try await redis.change(
                Scripts.claim,
                keys: [DeliveryKeys.claims, DeliveryKeys.assignmentSequence, DeliveryKeys.assignmentOrder,
                       DeliveryKeys.assignmentDriver, DeliveryKeys.assignmentStatus]
                    + pool.flatMap { [DeliveryKeys.openAssignments(of: $0), DeliveryKeys.assignments(of: $0)] },
                arguments: [String(pool.count)] + pool + accepted).array ?? []
            guard reply.count == 2 * accepted.count else { throw RPCError(.internal, "unexpected reply claiming drivers") }
            for (index, order) in accepted.enumerated() {
                claims[order] = (reply[2 * index].string ?? "", reply[2 * index + 1].string ?? "")
            }
        }
        var arguments: [String] = []
        for item in announced {
            let claim = item.status == .accepted ? claims[item.event.orderID] : nil
            arguments += [item.event.orderID, item.status.rawValue, item.id.description, claim?.assignment ?? "", claim?.driver ?? "",
                          item.event.restaurantID ?? "", item.event.customerID ?? ""]
        }
        let recorded = try await redis.change(Scripts.applyOrderEvents,
                                              keys: [partition.stream] + announced.map { DeliveryKeys.order($0.event.orderID) },
                                              arguments: arguments)
        return Int(recorded.int ?? 0)
    }

    /// Applies the service's own events (assignments, stages) to the driver pool.
    static func projectAssignments(_ events: [PlatformEvent], redis: RedisClient) async throws(RPCError) {
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
        if !arguments.isEmpty { _ = try await redis.change(Scripts.applyAssignmentEvents, keys: keys, arguments: arguments) }
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
}

/// The functions the service runs: its Lua/*.lua as one library.
enum Scripts {
    /// `REASSIGNED` and `closed[status]` (DeliveryServiceLogic.closedStatuses).
    private static let assignmentLua = "local REASSIGNED = '\(DeliveryServiceLogic.reassigned)'\nlocal closed = {"
        + DeliveryServiceLogic.closedStatuses.map { "\($0) = true" }.joined(separator: ", ") + "}"
    static let library = LuaLibrary(
        module: "delivery", helpers: [assignmentLua],
        functions: ["apply_order_events": DeliveryLua.applyOrderEvents, "claim": DeliveryLua.claim, "assign": DeliveryLua.assign,
                    "update": DeliveryLua.update, "current_driver": DeliveryLua.currentDriver,
                    "apply_assignment_events": DeliveryLua.applyAssignmentEvents, "list": DeliveryLua.list,
                    "watch_snapshot": DeliveryLua.watchSnapshot])
    static let applyOrderEvents = library.function("apply_order_events")
    static let claim = library.function("claim")
    static let assign = library.function("assign")
    static let update = library.function("update")
    static let currentDriver = library.function("current_driver")
    static let applyAssignmentEvents = library.function("apply_assignment_events")
    static let list = library.function("list")
    static let watchSnapshot = library.function("watch_snapshot")
}
