// DeliveryService: drivers and assignments in a DeliveryStore (Redis: every change an atomic Lua
// function, Lua/*.lua).
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
// event (once: `auto_assigned`), in the function that follows the order's announced status. So no order is assigned twice,
// and none is left unassigned. Manual assignment and stages change the record alone, in one step.
//
// Only drivers on shift get automatic assignments (SetDriverAvailability; the DRIVERS pool starts
// on shift the first time the pool's slot sees it). With nobody on shift an accepted order waits
// on a list in the pool's slot, oldest first, and leaves it only once its assignment is recorded
// on the order: a driver coming on shift, a restart, or the next batch that finds someone on
// shift drains it. A cancel ends the order's open assignment (CANCELED), and a stage or a manual
// assignment racing a cancel loses: they look through the group's unread events for one.
//
// WatchDriverAssignments subscribes to the process's EventHub first, catches up, then reads the
// driver's assignments with the id of the last event applied to each: the events at or before
// those are in the snapshot, the later ones are the changes to send.
import Logging
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient
import Synchronization
import TraceContext
import Tracing

/// The DeliveryService implementation; it also tells the access policy who drives an order.
public struct DeliveryServiceLogic: DeliveryServiceProvider, OrderPartiesLookup {
    /// Who gets automatic assignments when no pool is configured.
    public static let defaultDriver = "driver_auto"
    /// The delivery service's consumer group (its replicas share it).
    static let consumerGroup = "delivery_service"

    private let store: any DeliveryStore
    /// Putting the pool on shift, started by `start`.
    private let enlisting = TaskSlot()
    private let events: any EventCatchUp
    /// The service's own consumer, when it runs one (started and stopped with the service).
    private let consumer: EventConsumer?
    private let hub: EventHub
    private let logger: Logger

    /// The service on Redis; `drivers`: the pool that starts on shift (automatic assignments go to
    /// the least loaded driver on shift).
    public init(redis: RedisClient, drivers: [String], logger: Logger) {
        let store = RedisDeliveryStore(redis: redis, pool: drivers.isEmpty ? [Self.defaultDriver] : drivers, consumerGroup: Self.consumerGroup)
        let consumer = EventConsumer(group: Self.consumerGroup, redis: redis, logger: logger) { events, partition throws(RPCError) in
            do throws(StorageError) {
                let applied = try await store.applyOrderEvents(events, in: partition)
                if applied.recorded > 0 {
                    BusinessMetrics.automaticAssignments.increment(by: applied.recorded)
                    Self.logAssignments(applied.claimed, of: events, logger: logger)
                }
                try await store.applyAssignmentEvents(events)
            } catch {
                throw RPCError(storage: error)
            }
        }
        self.init(store: store, events: consumer, consumer: consumer, hub: EventHub(redis: redis, logger: logger), logger: logger)
    }

    /// One line per order given a driver, in a span of the trace its ORDER_ACCEPTED carried, so
    /// that following the accept's trace leads here.
    static func logAssignments(_ assignments: [AutomaticAssignment], of events: [PlatformEvent], logger: Logger) {
        for assignment in assignments {
            var context = InstrumentationContext.topLevel
            context.traceContext = events.last { $0.kind == .orderAccepted && $0.orderID == assignment.order }?.trace
            withSpan("assign driver", context: context, ofKind: .consumer) { span in
                if span.isRecording { span.attributes["order"] = assignment.order }
                // Bound as the task's own, over whatever trace the applying task inherited.
                TraceContext.$current.withValue(span.context.traceContext) {
                    logger.info("driver assigned automatically", metadata: [
                        "order": "\(assignment.order)", "driver": "\(assignment.driver)", "assignment": "\(assignment.assignment)",
                    ])
                }
            }
        }
    }

    /// Brings the service's gauges up to date (before a scrape): the consumer's lag and the
    /// orders waiting for a driver.
    public func recordMetrics() async {
        await consumer?.recordLag()
        if let waiting = try? await store.waitingCount() { BusinessMetrics.ordersWaitingForDriver.record(waiting) }
    }

    /// The service on any store; `events` catches up on the events the store's consumers apply.
    init(store: any DeliveryStore, events: any EventCatchUp, consumer: EventConsumer? = nil, hub: EventHub, logger: Logger) {
        self.store = store
        self.events = events
        self.consumer = consumer
        self.hub = hub
        self.logger = logger
    }

    /// Starts following the events, and in the background puts the pool's new drivers on shift
    /// and gives them the orders that waited (again every second until Redis lets it).
    public func start() async {
        let store = self.store, logger = self.logger
        enlisting.task.withLock { task in
            task = Task {
                while !Task.isCancelled {
                    do throws(StorageError) {
                        try await store.enlistPool()
                        let assigned = try await store.assignWaiting()
                        if assigned > 0 {
                            BusinessMetrics.automaticAssignments.increment(by: assigned)
                            logger.info("waiting orders assigned", metadata: ["orders": "\(assigned)"])
                        }
                        return
                    } catch {
                        logger.error("could not put the drivers on shift; trying again", metadata: ["error": "\(error)"])
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
            }
        }
        await consumer?.start()
    }

    public func setDriverAvailability(_ request: SetDriverAvailabilityRequest, context: ServerContext) async throws -> SetDriverAvailabilityResponse {
        let driver = request.driverId
        try Identifier.validate(driver, field: "driver_id")
        let onShift: Bool
        switch request.status {
        case .onShift: onShift = true
        case .offShift: onShift = false
        default: throw RPCError(.invalidArgument, "status must be ON_SHIFT or OFF_SHIFT")
        }
        try await stored { () async throws(StorageError) in try await store.setAvailability(driver, onShift: onShift) }
        logger.info("driver shift", metadata: ["driver": "\(driver)", "on_shift": "\(onShift)"])
        let assigned = onShift ? try await stored { () async throws(StorageError) in try await store.assignWaiting() } : 0
        if assigned > 0 { BusinessMetrics.automaticAssignments.increment(by: assigned) }
        return SetDriverAvailabilityResponse(driverId: driver, status: request.status, waitingOrdersAssigned: Int32(assigned))
    }
    /// Ends the watches (the server is about to drain).
    public func endWatches() { hub.shutdown() }
    public func stop() async {
        let task = enlisting.task.withLock { $0 }
        task?.cancel()
        await task?.value
        await consumer?.stop()
    }

    public func assignDriver(_ request: AssignDriverRequest, context: ServerContext) async throws -> AssignDriverResponse {
        let order = request.orderId, driver = request.driverId
        try Identifier.validate(order, field: "order_id")
        try Identifier.validate(driver, field: "driver_id")
        let assignment = "assignment_\(try await stored { () async throws(StorageError) in try await store.nextAssignmentNumber() })"
        var outcome = try await stored { () async throws(StorageError) in try await store.assign(order, to: driver, as: assignment) }
        if outcome != .assigned {
            // The order may have been accepted a moment ago, in events not applied yet: catch up
            // on its partition and ask once more before saying no (a no changed nothing).
            try await events.catchUp(OrderPartition(order: order))
            outcome = try await stored { () async throws(StorageError) in try await store.assign(order, to: driver, as: assignment) }
        }
        switch outcome {
        case .assigned:
            // It may have been waiting for a driver on shift: not any more (a claim already on its
            // way ends as REASSIGNED when it is recorded).
            try await stored { () async throws(StorageError) in try await store.stopWaiting([order]) }
            return AssignDriverResponse(assignmentId: assignment, status: DeliveryStatus.assigned.rawValue)
        case .notFound: throw RPCError(.notFound, "order \(order) not found")
        case .notAccepted(let status): throw RPCError(.failedPrecondition, "order \(order) is \(status), not accepted")
        case .delivered: throw RPCError(.failedPrecondition, "order \(order) is already delivered")
        case .canceled: throw RPCError(.failedPrecondition, "order \(order) was canceled")
        case .behind: throw RPCError(.unavailable, "the delivery service is catching up on events; try again")
        }
    }

    public func updateDeliveryStatus(_ request: UpdateDeliveryStatusRequest, context: ServerContext) async throws -> UpdateDeliveryStatusResponse {
        let order = request.orderId
        try Identifier.validate(order, field: "order_id")
        guard let stage = DeliveryStatus(rawValue: request.status) else {
            throw RPCError(.invalidArgument, "status must be one of \(DeliveryStatus.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var outcome = try await stored { () async throws(StorageError) in try await store.update(order, to: stage) }
        if outcome != .updated {
            // Assigned a moment ago, in events not applied yet? Ask once more after catching up.
            try await events.catchUp(OrderPartition(order: order))
            outcome = try await stored { () async throws(StorageError) in try await store.update(order, to: stage) }
        }
        switch outcome {
        case .updated:
            if stage == .delivered { BusinessMetrics.ordersDelivered.increment() }
            return UpdateDeliveryStatusResponse(orderId: order, status: stage.rawValue)
        case .noAssignment: throw RPCError(.notFound, "order \(order) has no driver assigned")
        case .delivered: throw RPCError(.failedPrecondition, "order \(order) is already delivered")
        case .failed: throw RPCError(.failedPrecondition, "the delivery of order \(order) failed: it needs a new assignment (AssignDriver)")
        case .canceled: throw RPCError(.failedPrecondition, "order \(order) was canceled")
        case .behind: throw RPCError(.unavailable, "the delivery service is catching up on events; try again")
        }
    }

    public func getDriverAssignments(_ request: GetDriverAssignmentsRequest, context: ServerContext) async throws -> GetDriverAssignmentsResponse {
        let driver = request.driverId
        try Identifier.validate(driver, field: "driver_id")
        guard request.pageSize >= 0 else { throw RPCError(.invalidArgument, "page_size must be 0 or more, got \(request.pageSize)") }
        let size = request.pageSize == 0 ? Self.maxAssignmentsPage : min(Int(request.pageSize), Self.maxAssignmentsPage)
        let query = "assignments of \(driver)"
        let after = try PageToken.position(request.pageToken, query: query)
        try await events.catchUp(nil)
        let assignments = try await stored { () async throws(StorageError) in
            try await store.assignments(of: driver, after: after, limit: size + 1)
        }
        let page = assignments.prefix(size)
        return GetDriverAssignmentsResponse(
            assignments: page.map { DeliveryAssignment(assignmentId: $0.id, orderId: $0.order, status: $0.status) },
            nextPageToken: assignments.count > size ? PageToken.make(after: page.last?.number ?? 0, query: query) : "")
    }

    /// The most assignments one GetDriverAssignments answers (also without a page size).
    static let maxAssignmentsPage = 1000

    public func watchDriverAssignments(
        _ request: WatchDriverAssignmentsRequest, responses: RPCWriter<DriverAssignmentUpdate>, context: ServerContext
    ) async throws {
        let driver = request.driverId
        try Identifier.validate(driver, field: "driver_id")
        let subscription = try await hub.subscribe(.driver(driver))
        defer { subscription.cancel() }
        // Everything the subscription may have missed is applied before the snapshot is read.
        try await events.catchUp(nil)
        let snapshot = try await stored { () async throws(StorageError) in try await store.assignments(of: driver, after: nil, limit: nil) }
        // Per assignment in the snapshot, the last event it reflects (nil: none yet, only its claim).
        var known: [String: StreamID?] = [:]
        for assignment in snapshot {
            known[assignment.id] = assignment.lastEvent
            guard Self.isOpen(assignment.status) else { continue }
            try await responses.write(DriverAssignmentUpdate(assignmentId: assignment.id, orderId: assignment.order, status: assignment.status))
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

    /// The driver of the order's current assignment (the order's other parties are the order
    /// service's to tell).
    public func parties(ofOrder orderID: String, for caller: Caller) async throws(RPCError) -> OrderParties? {
        guard let driver = try await stored({ () async throws(StorageError) in try await store.currentDriver(of: orderID) }) else {
            return nil
        }
        return OrderParties(driver: driver)
    }

    /// An assignment replaced by another of the same order.
    static let reassigned = "REASSIGNED"

    /// An assignment whose order was canceled.
    static let canceled = OrderStatus.canceled.rawValue

    /// The statuses of an assignment that no longer occupies its driver.
    static let closedStatuses = [DeliveryStatus.delivered.rawValue, DeliveryStatus.failed.rawValue, reassigned, canceled]

    /// Whether an assignment in this status still occupies its driver.
    static func isOpen(_ status: String) -> Bool { !closedStatuses.contains(status) }
}

/// A task the service starts and stops (a shared reference: the service is a value).
private final class TaskSlot: Sendable {
    let task = Mutex<Task<Void, Never>?>(nil)
}
