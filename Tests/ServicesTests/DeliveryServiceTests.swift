// DeliveryService over gRPC: automatic assignment on ORDER_ACCEPTED (driver_auto, or the least
// loaded of a pool), manual assignment and reassignment, delivery stages and how each reaches
// the order's status, DELIVERED being final, and GetDriverAssignments oldest first.
import DeliveryLogic
import PlatformProtos
import Testing

@Suite struct DeliveryServiceTests {
    @Test func acceptedOrderGetsDriverAutoByDefault() async throws {
        try await withPlatform { platform in
            let id = try await platform.placeAcceptedOrder()
            await eventually("order \(id) assigned") { try await platform.orderStatus(id) == "ASSIGNED" }
            let assignments = try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: DeliveryServiceLogic.defaultDriver)).assignments
            #expect(assignments.map(\.orderId) == [id])
            #expect(assignments.map(\.status) == ["ASSIGNED"])
            #expect(assignments.first?.assignmentId.hasPrefix("assignment_") == true)
        }
    }

    @Test func rejectedAndCanceledOrdersGetNoDriver() async throws {
        try await withPlatform { platform in
            let rejected = try await platform.placeOrder()
            _ = try await platform.restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: rejected))
            let canceled = try await platform.placeOrder()
            _ = try await platform.orders.cancelOrder(CancelOrderRequest(orderId: canceled))
            let accepted = try await platform.placeAcceptedOrder()
            await eventually("order \(accepted) assigned") { try await platform.orderStatus(accepted) == "ASSIGNED" }
            // GetDriverAssignments catches up on every event first, so this sees all three.
            #expect(try await platform.allAssignments().map(\.orderId) == [accepted])
            #expect(await statusCode { try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: rejected, driverId: "d1")) } == .failedPrecondition)
            #expect(await statusCode { try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: canceled, driverId: "d1")) } == .failedPrecondition)
        }
    }

    @Test func poolSpreadsAcceptedOrdersOverTheLeastLoaded() async throws {
        try await withPlatform(drivers: ["d1", "d2", "d3"]) { platform in
            var ids: [String] = []
            for _ in 0..<6 { ids.append(try await platform.placeAcceptedOrder()) }
            await eventually("6 assignments") { try await platform.allAssignments().count == 6 }
            for driver in ["d1", "d2", "d3"] {
                let assignments = try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: driver)).assignments
                #expect(assignments.count == 2, "\(driver): \(assignments)")
            }
            #expect(Set(try await platform.allAssignments().map(\.orderId)) == Set(ids))
            // A delivered order frees its driver: d1 is now the least loaded.
            let d1Order = try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1")).assignments[0].orderId
            _ = try await platform.deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: d1Order, status: "DELIVERED"))
            let next = try await platform.placeAcceptedOrder()
            await eventually("order \(next) assigned to d1") {
                try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1")).assignments.last?.orderId == next
            }
        }
    }

    @Test func assignDriverReassignsTheActiveAssignment() async throws {
        try await withPlatform { platform in
            let deliveries = platform.deliveries
            let id = try await platform.placeAcceptedOrder()
            let first = try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "alice"))
            #expect(first.status == "ASSIGNED")
            #expect(first.assignmentId.hasPrefix("assignment_"))
            let second = try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "bob"))
            #expect(second.status == "ASSIGNED")
            #expect(second.assignmentId != first.assignmentId)
            let alice = try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "alice")).assignments
            let bob = try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "bob")).assignments
            #expect(alice == [DeliveryAssignment(assignmentId: first.assignmentId, orderId: id, status: "REASSIGNED")])
            #expect(bob == [DeliveryAssignment(assignmentId: second.assignmentId, orderId: id, status: "ASSIGNED")])
            // The automatic assignment was handed over too: one active assignment per order.
            let auto = try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: DeliveryServiceLogic.defaultDriver)).assignments
            #expect(auto.map(\.status) == ["REASSIGNED"])
            // Stages move bob's assignment, the active one.
            _ = try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "PICKED_UP"))
            #expect(try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "bob")).assignments.map(\.status) == ["PICKED_UP"])
            #expect(try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "alice")).assignments.map(\.status) == ["REASSIGNED"])
            #expect(try await platform.orderStatus(id) == "PICKED_UP")
        }
    }

    @Test func driverAssignmentsAreListedOldestFirst() async throws {
        try await withPlatform { platform in
            var expected: [DeliveryAssignment] = []
            for _ in 0..<4 {
                let id = try await platform.placeAcceptedOrder()
                let assignment = try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "carol"))
                expected.append(DeliveryAssignment(assignmentId: assignment.assignmentId, orderId: id, status: "ASSIGNED"))
            }
            #expect(try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "carol")).assignments == expected)
            #expect(try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "nobody")).assignments == [])
        }
    }

    @Test func everyStageReachesTheOrderAndDeliveredIsFinal() async throws {
        try await withPlatform { platform in
            let deliveries = platform.deliveries
            let id = try await platform.placeAcceptedOrder()
            _ = try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "dave"))
            #expect(try await platform.orderStatus(id) == "ASSIGNED")
            for stage in ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"] {
                #expect(try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: stage)) == UpdateDeliveryStatusResponse(orderId: id, status: stage))
                #expect(try await platform.orderStatus(id) == stage, "after \(stage)")
            }
            for stage in ["ASSIGNED", "PICKED_UP", "FAILED", "DELIVERED"] {
                #expect(await statusCode { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: stage)) } == .failedPrecondition, "\(stage)")
            }
            #expect(await statusCode { try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "erin")) } == .failedPrecondition)
            #expect(try await platform.orderStatus(id) == "DELIVERED")
            #expect(try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "dave")).assignments.map(\.status) == ["DELIVERED"])
        }
    }

    /// Customers poll GetOrderStatus, which the order service answers from its read cache: a
    /// stage set through the delivery service a moment ago still shows at once, though the
    /// order was polled (and cached) just before.
    @Test func aPolledStatusShowsEachStageAtOnce() async throws {
        try await withPlatform { platform in
            let (orders, deliveries) = (platform.orders, platform.deliveries)
            let ids = [try await platform.placeAcceptedOrder(), try await platform.placeAcceptedOrder()]
            func fcalls() async throws -> Int {
                let stats = try await platform.redis.send(["INFO", "commandstats"]).string ?? ""
                let line = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_fcall:") } ?? ""
                return line.split(separator: "=").dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) } ?? 0
            }
            var polls = 0, functionRuns = 0
            for stage in ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"] {
                for id in ids {
                    let before = try await fcalls()
                    for _ in 0..<10 { _ = try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id)) }
                    (polls, functionRuns) = (polls + 10, functionRuns + (try await fcalls()) - before)
                    _ = try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: stage))
                    #expect(try await platform.orderStatus(id) == stage, "\(id) after \(stage)")
                }
            }
            // Most polls were answered without running the get function.
            #expect(functionRuns < polls / 2, "\(functionRuns) function calls for \(polls) polls")
        }
    }

    @Test func failedDeliveryShowsAsDeliveryFailedAndCanBeRetried() async throws {
        try await withPlatform { platform in
            let deliveries = platform.deliveries
            let id = try await platform.placeAcceptedOrder()
            _ = try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "FAILED"))
            #expect(try await platform.orderStatus(id) == "DELIVERY_FAILED")
            // The failed assignment is over: a stage for it is refused until a new assignment.
            #expect(await statusCode { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "PICKED_UP")) }
                == .failedPrecondition)
            #expect(try await platform.orderStatus(id) == "DELIVERY_FAILED")
            _ = try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "frank"))
            #expect(try await platform.orderStatus(id) == "ASSIGNED")
            _ = try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: "DELIVERED"))
            #expect(try await platform.orderStatus(id) == "DELIVERED")
        }
    }

    @Test func updateDeliveryStatusValidatesStatusAndNeedsAnAssignment() async throws {
        try await withPlatform { platform in
            let deliveries = platform.deliveries
            let id = try await platform.placeAcceptedOrder()
            for status in ["", "delivered", "REASSIGNED", "DELIVERY_FAILED", "CANCELED", "DELIVERED "] {
                #expect(await statusCode { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: status)) } == .invalidArgument, "'\(status)'")
            }
            #expect(await statusCode { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: "order_999", status: "PICKED_UP")) } == .notFound)
            let placed = try await platform.placeOrder()
            #expect(await statusCode { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: placed, status: "PICKED_UP")) } == .notFound)
            #expect(await statusCode { try await deliveries.assignDriver(AssignDriverRequest(orderId: placed, driverId: "d1")) } == .failedPrecondition)
            #expect(await statusCode { try await deliveries.assignDriver(AssignDriverRequest(orderId: "order_999", driverId: "d1")) } == .notFound)
            #expect(try await platform.orderStatus(placed) == "PLACED")
        }
    }
}
