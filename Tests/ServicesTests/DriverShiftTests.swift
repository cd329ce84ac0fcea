// Driver shifts over gRPC: automatic assignment picks the least loaded driver on shift; with
// nobody on shift, accepted orders wait and go, oldest first, to the first driver who comes on
// shift; a driver going off shift keeps what it has; shifts outlive a restart; an order canceled
// while it waited is never assigned.
@testable import DeliveryLogic
import PlatformCommon
import PlatformProtos
import Testing

@Suite struct DriverShiftTests {
    private func setShift(_ platform: Platform, _ driver: String, _ status: DriverAvailability) async throws -> Int32 {
        try await platform.deliveries.setDriverAvailability(SetDriverAvailabilityRequest(driverId: driver, status: status))
            .waitingOrdersAssigned
    }

    private func orders(of driver: String, _ platform: Platform) async throws -> [String] {
        try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: driver)).assignments
            .filter { $0.status == "ASSIGNED" }.map(\.orderId)
    }

    @Test func onlyDriversOnShiftGetOrdersAndOffShiftKeepsWhatItHas() async throws {
        try await withPlatform(drivers: ["d1", "d2"]) { platform in
            let first = try await platform.placeAcceptedOrder()
            await eventually("\(first) assigned") { try await platform.orderStatus(first) == "ASSIGNED" }
            #expect(try await orders(of: "d1", platform) == [first])
            #expect(try await setShift(platform, "d1", .offShift) == 0)
            var later: [String] = []
            for _ in 0..<3 { later.append(try await platform.placeAcceptedOrder()) }
            for id in later { await eventually("\(id) assigned") { try await platform.orderStatus(id) == "ASSIGNED" } }
            #expect(try await orders(of: "d2", platform) == later, "d1 is off shift, however little it has")
            #expect(try await orders(of: "d1", platform) == [first], "and keeps its delivery")
            // Shifts outlive a restart: DRIVERS puts only new drivers on shift.
            await platform.stopDeliveryServices()
            try await platform.startDeliveryService()
            let next = try await platform.placeAcceptedOrder()
            await eventually("\(next) assigned") { try await platform.orderStatus(next) == "ASSIGNED" }
            #expect(try await orders(of: "d2", platform) == later + [next])

            for bad in [SetDriverAvailabilityRequest(driverId: "d1"), SetDriverAvailabilityRequest(driverId: "no such", status: .onShift)] {
                #expect(await statusCode { try await platform.deliveries.setDriverAvailability(bad) } == .invalidArgument, "\(bad)")
            }
        }
    }

    @Test func withNobodyOnShiftOrdersWaitAndGoOldestFirst() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            #expect(try await setShift(platform, "d1", .offShift) == 0)
            var waiting: [String] = []
            for _ in 0..<4 { waiting.append(try await platform.placeAcceptedOrder()) }
            let canceled = waiting.removeLast()
            // Every acceptance has reached the delivery service (its consumer has nothing left).
            try await platform.deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1")).assignments.forEach { _ in }
            _ = try await platform.orders.cancelOrder(CancelOrderRequest(orderId: canceled))
            await eventually("the cancel reached the delivery service") {
                try await platform.redis.send(["ZSCORE", DeliveryKeys.waiting, canceled]).string == nil
            }
            for id in waiting + [canceled] { #expect(try await platform.orderStatus(id) != "ASSIGNED") }

            #expect(try await setShift(platform, "d2", .onShift) == 3)
            #expect(try await orders(of: "d2", platform) == waiting, "oldest first, the canceled one left out")
            for id in waiting { await eventually("\(id) shows its driver") { try await platform.orderStatus(id) == "ASSIGNED" } }
            #expect(try await platform.orderStatus(canceled) == "CANCELED")
            // The next order goes to the least loaded on shift: d1, back with nothing.
            #expect(try await setShift(platform, "d1", .onShift) == 0)
            let next = try await platform.placeAcceptedOrder()
            await eventually("\(next) assigned") { try await platform.orderStatus(next) == "ASSIGNED" }
            #expect(try await orders(of: "d1", platform) == [next])
        }
    }

    @Test func aWaitingOrderGivenADriverByHandIsNotAssignedAgain() async throws {
        try await withPlatform(drivers: ["d1"]) { platform in
            #expect(try await setShift(platform, "d1", .offShift) == 0)
            let id = try await platform.placeAcceptedOrder()
            await eventually("\(id) waits") { try await platform.redis.send(["ZSCORE", DeliveryKeys.waiting, id]).string != nil }
            // AssignDriver takes an order that waits for a driver on shift.
            _ = try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "d7"))
            #expect(try await platform.orderStatus(id) == "ASSIGNED")
            #expect(try await setShift(platform, "d1", .onShift) == 0, "it no longer waits")
            #expect(try await orders(of: "d1", platform).isEmpty)
            #expect(try await orders(of: "d7", platform) == [id])
            let load = try await platform.redis.send(["GET", DeliveryKeys.openAssignments(of: "d1")]).string.flatMap { Int($0) } ?? 0
            #expect(load == 0)
        }
    }
}
