// DeliveryService: drivers and assignments in Redis, every change an atomic Lua script.
//
// Keys: `delivery:assignment:<id>` (hash: order_id, driver_id, status), `delivery:order:<id>`
// (hash: accepted, auto_assigned, assignment = the active one, restaurant and customer as the
// ORDER_ACCEPTED event told them, order_status and order_event = the newest order event seen:
// delivery never reads the order service's keys), `delivery:driver:<id>:assignments` (list, oldest first) and
// `delivery:driver:<id>:active` (open assignments, for least-loaded).
// The service learns of orders from the order service's events, through its consumer group
// (EventConsumer: the replicas share the events, in any order), and assigns a driver
// automatically; the script marks the order `auto_assigned` in the same step, so replays, restarts
// and other replicas never assign twice, and `order_status` follows only the newest order event. Every assignment and stage change appends
// DRIVER_ASSIGNED / DELIVERY_STATUS to the event stream and publishes it in that same step, with
// the driver, the assignment and the order's restaurant and customer as fields, so watchers of
// any of them are reached.
//
// WatchDriverAssignments subscribes to the process's EventHub first, then reads the driver's
// open assignments together with the stream's last id in one script: the snapshot shows exactly
// the events up to that id, so the events after it are the changes to send.
import Logging
import PlatformAuth
import PlatformCommon
import PlatformProtos
import RedisClient

/// The DeliveryService implementation; it also tells the access policy who drives an order.
public struct DeliveryServiceLogic: DeliveryServiceProvider, OrderPartiesLookup {
    /// Who gets automatic assignments when no pool is configured.
    public static let defaultDriver = "driver_auto"

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
        events = EventConsumer(group: "delivery_service", redis: redis, logger: logger) { events throws(RPCError) in
            var orders: [String] = []
            for event in events {
                // The order service's own announcements: delivery judges manual assignments by them.
                guard let id = event.id, event.kind.isOrderServiceEvent,
                      let status = event.announcedStatus else { continue }
                orders += [status.rawValue, event.orderID, id.description, event.restaurantID ?? "", event.customerID ?? ""]
            }
            guard !orders.isEmpty else { return }
            let reply = try await redis.change(Scripts.assign, arguments: ["auto", String(pool.count)] + pool + orders)
            if let assigned = reply.int, assigned > 0 {
                logger.info("drivers assigned automatically", metadata: ["new": "\(assigned)"])
            }
        }
    }

    /// Starts following ORDER_ACCEPTED events.
    public func start() async { await events.start() }
    /// Ends the watches (the server is about to drain).
    public func endWatches() { hub.shutdown() }
    public func stop() async { await events.stop() }

    public func assignDriver(_ request: AssignDriverRequest, context: ServerContext) async throws -> AssignDriverResponse {
        try Identifier.validate(request.orderId, field: "order_id")
        try Identifier.validate(request.driverId, field: "driver_id")
        let reply = try await judged { () async throws(RPCError) in
            try await redis.change(Scripts.assign, arguments: ["manual", request.orderId, request.driverId])
        }
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
        let reply = try await judged { () async throws(RPCError) in try await redis.change(Scripts.update, arguments: [request.orderId, status.rawValue]) }
        return UpdateDeliveryStatusResponse(orderId: request.orderId, status: reply.string ?? status.rawValue)
    }

    public func getDriverAssignments(_ request: GetDriverAssignmentsRequest, context: ServerContext) async throws -> GetDriverAssignmentsResponse {
        try Identifier.validate(request.driverId, field: "driver_id")
        try await events.catchUp()
        let flat = try await redis.script(Scripts.list, arguments: [request.driverId]).array ?? []
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
        let reply = try await redis.script(Scripts.openAssignments, arguments: [driver]).array ?? []
        let snapshot = reply.first?.string.flatMap(StreamID.init) ?? .zero
        let open = Array(reply.dropFirst())
        for index in stride(from: 0, to: open.count - 2, by: 3) {
            try await responses.write(DriverAssignmentUpdate(
                assignmentId: open[index].string ?? "", orderId: open[index + 1].string ?? "", status: open[index + 2].string ?? ""))
        }
        for try await event in subscription {
            guard let id = event.id, id > snapshot else { continue }
            let at = Int64(id.milliseconds)
            if event.kind == .driverAssigned, event.previousDriverID == driver, let previous = event.previousAssignmentID {
                try await responses.write(DriverAssignmentUpdate(
                    assignmentId: previous, orderId: event.orderID, status: Self.reassigned, updatedAtUnixMs: at))
            }
            guard event.driverID == driver, let assignment = event.assignmentID else { continue }
            switch event.kind {
            case .driverAssigned:
                try await responses.write(DriverAssignmentUpdate(
                    assignmentId: assignment, orderId: event.orderID, status: DeliveryStatus.assigned.rawValue, updatedAtUnixMs: at))
            case .deliveryStatus:
                try await responses.write(DriverAssignmentUpdate(
                    assignmentId: assignment, orderId: event.orderID, status: event.detail ?? "", updatedAtUnixMs: at))
            default:
                continue
            }
        }
    }

    /// Runs a change that judges an order by what the service knows of it. When the answer is
    /// no (NOT_FOUND, FAILED_PRECONDITION), the order may have been accepted or assigned a
    /// moment ago, in events not applied yet: catch up and ask once more before saying no. The
    /// script changes nothing when it says no, so asking again is safe.
    private func judged(_ change: () async throws(RPCError) -> RedisReply) async throws(RPCError) -> RedisReply {
        do throws(RPCError) {
            return try scriptOutcome(await change())
        } catch where error.code == .notFound || error.code == .failedPrecondition {
            try await events.catchUp()
            return try scriptOutcome(await change())
        }
    }

    /// The driver of the order's current assignment (the order's other parties are the order
    /// service's to tell).
    public func parties(ofOrder orderID: String, for caller: Caller) async throws(RPCError) -> OrderParties? {
        let reply = try await redis.script(Scripts.currentDriver, arguments: [orderID])
        guard let driver = reply.string else { return nil }
        return OrderParties(driver: driver)
    }

    /// An assignment replaced by another of the same order.
    static let reassigned = "REASSIGNED"
}

/// The Lua scripts; the event fields are PlatformEvent.Field's.
enum Scripts {
    private typealias Field = PlatformEvent.Field

    /// ARGV: 'manual', order id, driver id: returns {assignment id, driver id}. Or 'auto', the pool
    /// size k, the k pool drivers, then per order event its announced status, order id, event id,
    /// restaurant and customer: the order's `order_status` follows the newest of them, and each
    /// ACCEPTED order not yet auto-assigned gets the least loaded driver (idempotent: replays and
    /// replicas assign nothing twice); returns how many were assigned.
    static let assign = """
        \(eventLua)
        local function assign(order, driver)
            local okey = 'delivery:order:' .. order
            local ofields = redis.call('HMGET', okey, 'assignment', 'restaurant', 'customer')
            local current = ofields[1]
            local previousDriver, previous = '', ''
            if current then
                local ckey = 'delivery:assignment:' .. current
                local fields = redis.call('HMGET', ckey, 'status', 'driver_id')
                if fields[1] ~= 'FAILED' and fields[1] ~= 'DELIVERED' then
                    redis.call('HSET', ckey, 'status', '\(DeliveryServiceLogic.reassigned)')
                    redis.call('DECR', 'delivery:driver:' .. fields[2] .. ':active')
                    previousDriver, previous = fields[2], current
                end
            end
            local id = 'assignment_' .. redis.call('INCR', 'delivery:assignment:seq')
            redis.call('HSET', 'delivery:assignment:' .. id, 'order_id', order, 'driver_id', driver, 'status', 'ASSIGNED')
            redis.call('RPUSH', 'delivery:driver:' .. driver .. ':assignments', id)
            redis.call('INCR', 'delivery:driver:' .. driver .. ':active')
            redis.call('HSET', okey, 'assignment', id)
            emit('DRIVER_ASSIGNED:' .. order .. ':' .. driver, {'\(Field.driver.rawValue)', driver, '\(Field.assignment.rawValue)', id,
                '\(Field.restaurant.rawValue)', ofields[2] or '', '\(Field.customer.rawValue)', ofields[3] or '',
                '\(Field.previousDriver.rawValue)', previousDriver, '\(Field.previousAssignment.rawValue)', previous})
            return id
        end

        if ARGV[1] == 'manual' then
            local order, driver = ARGV[2], ARGV[3]
            local okey = 'delivery:order:' .. order
            if not redis.call('HGET', okey, 'accepted') then
                local status = redis.call('HGET', okey, 'order_status')
                if not status then return {'ERR', 'NOT_FOUND:order ' .. order .. ' not found'} end
                return {'ERR', 'FAILED_PRECONDITION:order ' .. order .. ' is ' .. status .. ', not accepted'}
            end
            local current = redis.call('HGET', okey, 'assignment')
            if current and redis.call('HGET', 'delivery:assignment:' .. current, 'status') == 'DELIVERED' then
                return {'ERR', 'FAILED_PRECONDITION:order ' .. order .. ' is already delivered'}
            end
            return {assign(order, driver), driver}
        end

        local poolSize = tonumber(ARGV[2])
        local assigned = 0
        for i = 3 + poolSize, #ARGV, 5 do
            local status, order, event = ARGV[i], ARGV[i + 1], ARGV[i + 2]
            local okey = 'delivery:order:' .. order
            local last = redis.call('HGET', okey, 'order_event')
            if not last or older(last, event) then
                redis.call('HSET', okey, 'order_status', status, 'order_event', event)
            end
            if status == '\(OrderStatus.accepted.rawValue)' and not redis.call('HGET', okey, 'auto_assigned') then
                local driver, best = nil, nil
                for p = 3, 2 + poolSize do
                    local load = tonumber(redis.call('GET', 'delivery:driver:' .. ARGV[p] .. ':active') or '0')
                    if best == nil or load < best then best = load; driver = ARGV[p] end
                end
                redis.call('HSET', okey, 'accepted', '1', 'auto_assigned', '1', 'restaurant', ARGV[i + 3], 'customer', ARGV[i + 4])
                assign(order, driver)
                assigned = assigned + 1
            end
        end
        return assigned
        """

    /// ARGV: order id, new status. DELIVERED is final; FAILED and DELIVERED free the driver.
    static let update = """
        \(eventLua)
        local order = ARGV[1]
        local ofields = redis.call('HMGET', 'delivery:order:' .. order, 'assignment', 'restaurant', 'customer')
        local current = ofields[1]
        if not current then return {'ERR', 'NOT_FOUND:order ' .. order .. ' has no driver assigned'} end
        local akey = 'delivery:assignment:' .. current
        local fields = redis.call('HMGET', akey, 'status', 'driver_id')
        if fields[1] == 'DELIVERED' then
            return {'ERR', 'FAILED_PRECONDITION:order ' .. order .. ' is already delivered'}
        end
        local wasOpen = fields[1] ~= 'FAILED'
        local isOpen = ARGV[2] ~= 'FAILED' and ARGV[2] ~= 'DELIVERED'
        redis.call('HSET', akey, 'status', ARGV[2])
        local active = 'delivery:driver:' .. fields[2] .. ':active'
        if wasOpen and not isOpen then redis.call('DECR', active) end
        if isOpen and not wasOpen then redis.call('INCR', active) end
        emit('DELIVERY_STATUS:' .. order .. ':' .. ARGV[2], {'\(Field.driver.rawValue)', fields[2], '\(Field.assignment.rawValue)', current,
            '\(Field.restaurant.rawValue)', ofields[2] or '', '\(Field.customer.rawValue)', ofields[3] or ''})
        return ARGV[2]
        """

    /// ARGV: order id. Returns the driver of its current assignment, or nil.
    static let currentDriver = """
        local current = redis.call('HGET', 'delivery:order:' .. ARGV[1], 'assignment')
        if not current then return false end
        return redis.call('HGET', 'delivery:assignment:' .. current, 'driver_id')
        """

    /// ARGV: driver id. Returns a flat list: id, order id, status per assignment, oldest first.
    static let list = """
        local out = {}
        for _, id in ipairs(redis.call('LRANGE', 'delivery:driver:' .. ARGV[1] .. ':assignments', 0, -1)) do
            local fields = redis.call('HMGET', 'delivery:assignment:' .. id, 'order_id', 'status')
            out[#out + 1] = id
            out[#out + 1] = fields[1] or ''
            out[#out + 1] = fields[2] or ''
        end
        return out
        """

    /// ARGV: driver id. Returns the stream's last id, then id, order id, status per open
    /// assignment (not delivered, failed or reassigned), oldest first: the state at that id.
    static let openAssignments = """
        local last = redis.call('XREVRANGE', '\(PlatformEvents.stream)', '+', '-', 'COUNT', 1)
        local out = {last[1] and last[1][1] or '0-0'}
        for _, id in ipairs(redis.call('LRANGE', 'delivery:driver:' .. ARGV[1] .. ':assignments', 0, -1)) do
            local fields = redis.call('HMGET', 'delivery:assignment:' .. id, 'order_id', 'status')
            if fields[2] ~= 'DELIVERED' and fields[2] ~= 'FAILED' and fields[2] ~= '\(DeliveryServiceLogic.reassigned)' then
                out[#out + 1] = id
                out[#out + 1] = fields[1] or ''
                out[#out + 1] = fields[2] or ''
            end
        end
        return out
        """
}
