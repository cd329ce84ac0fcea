// A property-based test of the order lifecycle against the running services: random sequences
// of place (by menu lines or free text), accept, reject, ready, cancel (by each party), assign and
// delivery updates, from a seeded generator (the seed is in every failure message; set
// LIFECYCLE_SEED to replay one). A model of each order says what every call must answer; after
// each step the order reads as the model says, and at the end:
// - a status never moved backwards, except where the seed's contract moves it: an assignment by
//   an operator (AssignDriver) starts the delivery again at ASSIGNED, whatever its stage;
// - a final order never changed again;
// - each accepted order has at most one open assignment;
// - each driver's load (its open-assignment counter) equals its open assignments;
// - the money adds up: lines times unit prices make the total, in minor and in major units.
@testable import DeliveryLogic
import Foundation
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import Testing
import TestSupport


@Suite struct LifecyclePropertyTests {
    /// What the test expects of one order.
    struct Model {
        var status: OrderStatus
        var kitchen: KitchenStatus?
        /// Each status it reached, and whether an operator's AssignDriver took it there.
        var history: [(status: OrderStatus, byAssignDriver: Bool)]
        var priced: Bool
    }

    static let drivers = ["d1", "d2", "d3"]
    static let rank: [OrderStatus: Int] = [.placed: 0, .accepted: 1, .assigned: 2, .pickedUp: 3, .outForDelivery: 4, .deliveryFailed: 5,
                                           .delivered: 6, .rejected: 6, .canceled: 6]

    @Test func randomLifecyclesKeepTheInvariants() async throws {
        let seed = ProcessInfo.processInfo.environment["LIFECYCLE_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0..<UInt64.max)
        var random = SplitMix64(seed: seed)
        try await withPlatform(drivers: Self.drivers, auth: true) { platform in
            let keys = try #require(platform.keys)
            let tokens = (customer: keys.token("customer", "c1"), restaurant: keys.token("restaurant", "r1"), operator: keys.token("operator", "ops"))
            let orders = platform.orders, restaurants = platform.restaurants, deliveries = platform.deliveries
            _ = try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [
                MenuItem(itemId: "soup", name: "Soup", priceCents: 450), MenuItem(itemId: "bread", name: "Bread", priceCents: 125),
                MenuItem(itemId: "wine", name: "Wine", priceCents: 1999)], currency: "EUR"), options: bearer(tokens.restaurant))
            var models: [String: Model] = [:]
            var ids: [String] = []

            func read(_ id: String) async throws -> GetOrderStatusResponse {
                try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id), options: bearer(tokens.operator))
            }
            func expectCode(_ code: StatusCode?, _ allowed: Set<StatusCode?>, _ what: String) {
                #expect(allowed.contains(code), "seed \(seed): \(what) answered \(code.map { "\($0)" } ?? "OK")")
            }
            func move(_ id: String, to status: OrderStatus, byAssignDriver: Bool = false) {
                models[id]?.status = status
                models[id]?.history.append((status, byAssignDriver))
            }

            for step in 0..<120 {
                let action = ids.count < 3 ? 0 : Int.random(in: 0..<9, using: &random)
                if action == 0 {
                    let priced = Bool.random(using: &random)
                    let request = priced
                        ? PlaceOrderRequest(customerId: "c1", restaurantId: "r1", lines: (0..<Int.random(in: 1...3, using: &random)).map { _ in
                            OrderLine(menuItemId: ["soup", "bread", "wine"].randomElement(using: &random)!, quantity: Int32.random(in: 1...5, using: &random))
                        })
                        : PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2, restaurantId: "r1")
                    let id = try await orders.placeOrder(request, options: bearer(tokens.customer)).orderId
                    ids.append(id)
                    models[id] = Model(status: .placed, history: [(.placed, false)], priced: priced)
                    continue
                }
                let id = ids.randomElement(using: &random)!
                let model = models[id]!
                let what = "step \(step) on \(id) (\(model.status.rawValue))"
                switch action {
                case 1:  // accept
                    let code = await outcome { try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id), options: bearer(tokens.restaurant)) }.code
                    if model.status == .placed {
                        expectCode(code, [nil], "accept, \(what)")
                        move(id, to: .accepted)
                        models[id]?.kitchen = .preparing
                        // Three drivers on shift: it is assigned automatically.
                        await eventually("seed \(seed): \(id) assigned") { try await read(id).status == "ASSIGNED" }
                        move(id, to: .assigned)
                    } else {
                        expectCode(code, model.history.contains { $0.status == .accepted } ? [nil, .failedPrecondition] : [.failedPrecondition], "accept, \(what)")
                    }
                case 2:  // reject
                    let code = await outcome { try await restaurants.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: id, reason: .tooBusy), options: bearer(tokens.restaurant)) }.code
                    if model.status == .placed {
                        expectCode(code, [nil], "reject, \(what)")
                        move(id, to: .rejected)
                    } else {
                        expectCode(code, model.status == .rejected ? [nil] : [.failedPrecondition], "reject, \(what)")
                    }
                case 3:  // ready
                    let code = await outcome { try await restaurants.markOrderReady(MarkOrderReadyRequest(restaurantId: "r1", orderId: id), options: bearer(tokens.restaurant)) }.code
                    let kitchenHasIt = (model.status == .accepted || model.status == .assigned) && model.kitchen != nil
                    expectCode(code, kitchenHasIt ? [nil] : [.failedPrecondition], "ready, \(what)")
                    if kitchenHasIt { models[id]?.kitchen = .ready }
                case 4, 5:  // cancel by a party
                    let party = [CancelingParty.customer, .restaurant, .operator].randomElement(using: &random)!
                    let token = party == .customer ? tokens.customer : party == .restaurant ? tokens.restaurant : tokens.operator
                    let status = try await orders.cancelOrder(CancelOrderRequest(orderId: id, reason: "property"), options: bearer(token)).status
                    let beforePickup = model.status == .accepted || model.status == .assigned
                    let allowed = switch party {
                    case .customer: model.status == .placed || (beforePickup && model.kitchen != .ready)
                    case .restaurant: beforePickup
                    case .operator: !model.status.isFinal
                    }
                    #expect(status == (allowed ? "CANCELED" : "COULD_NOT_CANCEL"), "seed \(seed): cancel by \(party), \(what)")
                    if allowed { move(id, to: .canceled) }
                case 6:  // a manual assignment
                    let driver = Self.drivers.randomElement(using: &random)!
                    let code = await outcome { try await deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: driver), options: bearer(tokens.operator)) }.code
                    let assignable = model.history.contains { $0.status == .accepted } && !model.status.isFinal
                    expectCode(code, assignable ? [nil] : [.failedPrecondition], "assign, \(what)")
                    if assignable { move(id, to: .assigned, byAssignDriver: true) }
                default:  // the driver's next stage, or a failure
                    let next: DeliveryStatus? = switch model.status {
                    case .assigned: .pickedUp
                    case .pickedUp: Bool.random(using: &random) ? .outForDelivery : .failed
                    case .outForDelivery: Bool.random(using: &random) ? .delivered : .failed
                    default: nil
                    }
                    let stage = next ?? .pickedUp
                    let code = await outcome { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: id, status: stage.rawValue), options: bearer(tokens.operator)) }.code
                    if next != nil {
                        expectCode(code, [nil], "update to \(stage.rawValue), \(what)")
                        move(id, to: stage.orderStatus)
                    } else {
                        // No driver yet (NOT_FOUND), or delivered, failed or canceled
                        // (FAILED_PRECONDITION).
                        expectCode(code, model.history.contains { $0.status == .assigned } ? [.failedPrecondition] : [.notFound, .failedPrecondition],
                                   "update, \(what)")
                    }
                }
                let read = try await read(id)
                #expect(read.status == models[id]!.status.rawValue, "seed \(seed): \(what): reads \(read.status)")
                #expect(read.kitchenStatus == (models[id]!.kitchen?.rawValue ?? ""), "seed \(seed): \(what): kitchen \(read.kitchenStatus)")
            }

            // Every order: its history, once more what it reads, and its money.
            for id in ids {
                let model = models[id]!
                for (before, after) in zip(model.history, model.history.dropFirst()) {
                    #expect(after.byAssignDriver || Self.rank[after.status]! > Self.rank[before.status]!,
                            "seed \(seed): \(id) went \(before.status) -> \(after.status)")
                    #expect(!before.status.isFinal, "seed \(seed): \(id) changed after \(before.status)")
                }
                let read = try await read(id)
                #expect(read.status == model.status.rawValue, "seed \(seed): \(id) ends \(read.status)")
                if model.priced {
                    #expect(read.lines.map(\.lineTotalCents).reduce(0, +) == read.totalCents
                        && read.lines.allSatisfy { $0.lineTotalCents == $0.unitPriceCents * Int64($0.quantity) }
                        && read.totalPrice == Double(read.totalCents) / 100 && read.currency == "EUR", "seed \(seed): \(id)'s money")
                }
            }
            // The pool: at most one open assignment per order, and each load its open assignments.
            await eventually("seed \(seed): the pool settled") {
                var openPerOrder: [String: Int] = [:]
                for driver in Self.drivers {
                    let open = try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: driver), options: bearer(tokens.operator))
                        .assignments.filter { DeliveryServiceLogic.isOpen($0.status) }
                    for assignment in open { openPerOrder[assignment.orderId, default: 0] += 1 }
                    let load = try await platform.redis.send(["GET", DeliveryKeys.openAssignments(of: driver)]).string.flatMap { Int($0) } ?? 0
                    guard load == open.count else { return false }
                }
                return openPerOrder.values.allSatisfy { $0 <= 1 } && openPerOrder.keys.allSatisfy { !(models[$0]?.status.isFinal ?? true) }
            }
        }
    }
}
