// `test-client` (or `test-client tour`): a guided walk through the whole platform, narrated step
// by step. It places and cancels an order, updates and reads a priced menu, orders from it by
// menu lines with a delivery address and an idempotency key (and retries, getting the same
// order back), places a free-text order too, has the restaurant accept one and reject the other, watches the delivery service assign a
// driver automatically, has the kitchen mark the food ready, reassigns the order to a driver by
// hand and walks the delivery to DELIVERED, while a WatchOrder stream opened before the accept follows the order live; the last
// step checks that the stream showed every stage, in order, and ended at DELIVERED. Customer, restaurant and driver ids carry a random run id (order ids come from the
// service), so the tour can run again and again against the same Redis.
import ArgumentParser
import GRPCHTTP2
import PlatformProtos

struct Tour: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A guided tour of the platform (the default).")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var watch: AssignmentWatchOptions
    @Option(help: "The restaurant the tour uses (default: a new one per run).") var restaurant: String?

    func run() async throws {
        let services = try connection.connect()
        defer { services.close() }
        let runID = String(UInt64.random(in: 0..<2_176_782_336), radix: 36)  // up to 6 base-36 digits
        var steps = Steps()
        do {
            try await walk(services, runID: runID, steps: &steps)
        } catch {
            printError("tour stopped after \(steps.passed) steps passed")
            throw ExitCode.failure
        }
        print("\ntour complete: \(steps.passed) steps passed")
    }

    private func walk(_ services: Services, runID: String, steps: inout Steps) async throws(StepFailed) {
        let customer = "customer_\(runID)"
        let restaurantID = restaurant ?? "restaurant_\(runID)"
        let handDriver = "driver_tour_\(runID)"

        let first = try await place(PlaceOrderRequest(customerId: customer, items: ["burger", "fries"], totalPrice: 15.5),
                                    title: "Place an order", services, &steps)
        _ = try await steps.run("Read its status", sent: "GetOrderStatus order_id=\(first)") { () throws(ServiceError) in
            let response = try await services.order.call(as: .customer(customer)) {
                try await $0.getOrderStatus(GetOrderStatusRequest(orderId: first), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.status == "PLACED" && response.items == ["burger", "fries"],
                           pass: "order \(first) is PLACED", fail: "expected PLACED with burger, fries")
        }
        _ = try await steps.run("Cancel it while it is still PLACED", sent: "CancelOrder order_id=\(first)") { () throws(ServiceError) in
            let response = try await services.order.call(as: .customer(customer)) {
                try await $0.cancelOrder(CancelOrderRequest(orderId: first), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.status == "CANCELED",
                           pass: "order canceled: \(first)", fail: "expected CANCELED, got \(response.status)")
        }

        let menu = [MenuItem(itemId: "burger", name: "Burger", description: "beef, cheddar", priceCents: 950),
                    MenuItem(itemId: "fries", name: "Fries", priceCents: 350),
                    MenuItem(itemId: "soda", name: "Soda", priceCents: 250)]
        _ = try await steps.run("Update the menu of \(restaurantID)",
                                sent: "UpdateMenu restaurant_id=\(restaurantID) currency=USD items=[\(menu.map(\.line).joined(separator: "; "))]") { () throws(ServiceError) in
            let response = try await services.restaurant.call(as: .restaurant(restaurantID)) {
                try await $0.updateMenu(UpdateMenuRequest(restaurantId: restaurantID, items: menu, currency: "USD"), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.status == "SUCCESS",
                           pass: "menu updated: \(restaurantID)", fail: "expected SUCCESS, got \(response.status)")
        }
        _ = try await steps.run("Read the menu back", sent: "GetMenu restaurant_id=\(restaurantID)") { () throws(ServiceError) in
            let response = try await services.restaurant.call {
                try await $0.getMenu(GetMenuRequest(restaurantId: restaurantID), options: $1)
            }
            // Another run may have added items to a shared restaurant: ours must all be there as
            // sent, each with its price in dollars too.
            let ok = menu.allSatisfy { sent in
                response.items.contains { $0.itemId == sent.itemId && $0.name == sent.name && $0.priceCents == sent.priceCents
                    && $0.price == Double(sent.priceCents) / 100 }
            }
            return Outcome((), got: response.items.map(\.line).joined(separator: "; "), ok: ok,
                           pass: "menu has the \(menu.count) items sent", fail: "the menu read back differs from the update")
        }

        let order = PlaceOrderRequest(customerId: customer, restaurantId: restaurantID,
                                      lines: [OrderLine(menuItemId: "burger", quantity: 2, note: "no onions"), OrderLine(menuItemId: "soda", quantity: 1)],
                                      requestId: "checkout-\(runID)",
                                      deliveryAddress: Address(street: "12 Harbour Road", city: "Springfield", postalCode: "12345", notes: "ring twice"))
        let accepted = try await place(order, title: "Order from \(restaurantID)'s menu", services, &steps)
        _ = try await steps.run("Retry that order (a lost reply)", sent: "PlaceOrder again with request_id=\(order.requestId)") { () throws(ServiceError) in
            let response = try await services.order.call(as: .customer(customer)) { try await $0.placeOrder(order, options: $1) }
            return Outcome((), got: response.summary, ok: response.orderId == accepted,
                           pass: "the same order came back: \(accepted)", fail: "expected \(accepted) again, not a second order")
        }
        _ = try await steps.run("Read the priced order", sent: "GetOrderStatus order_id=\(accepted)") { () throws(ServiceError) in
            let response = try await services.order.call(as: .customer(customer)) {
                try await $0.getOrderStatus(GetOrderStatusRequest(orderId: accepted), options: $1)
            }
            let ok = response.totalCents == 2150 && response.currency == "USD" && response.totalPrice == 21.5
                && response.items == ["2 x Burger (no onions)", "1 x Soda"] && response.deliveryAddress == order.deliveryAddress
            return Outcome((), got: response.summary, ok: ok,
                           pass: "priced from the menu: 2150 USD minor units, to \(response.deliveryAddress.street)",
                           fail: "expected 2 x Burger (no onions), 1 x Soda for 21.50 USD to the address sent")
        }
        let rejected = try await place(PlaceOrderRequest(customerId: customer, items: ["fries"], totalPrice: 3.5, restaurantId: restaurantID),
                                       title: "Place another order with \(restaurantID)", services, &steps)
        let live = LiveOrder(accepted, customer: customer, services)
        defer { live.stop() }
        _ = try await steps.run("Follow \(accepted) live", sent: "WatchOrder order_id=\(accepted)") { () throws(ServiceError) in
            let first = try await live.next()
            return Outcome((), got: first?.summary ?? "the stream ended", ok: first?.status == "PLACED",
                           pass: "watching: the stream starts with the current status", fail: "expected PLACED first")
        }
        _ = try await steps.run("The restaurant accepts \(accepted), ready in 15 minutes",
                                sent: "AcceptOrder restaurant_id=\(restaurantID) order_id=\(accepted) prep_minutes=15") { () throws(ServiceError) in
            let response = try await services.restaurant.call(as: .restaurant(restaurantID)) {
                try await $0.acceptOrder(AcceptOrderRequest(restaurantId: restaurantID, orderId: accepted, prepMinutes: 15), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.status == "ACCEPTED" && response.estimatedReadyAtUnixMs > 0,
                           pass: "order accepted: \(accepted)", fail: "expected ACCEPTED with an estimated ready time, got \(response.status)")
        }
        _ = try await steps.run("The restaurant rejects \(rejected): too busy",
                                sent: "RejectOrder restaurant_id=\(restaurantID) order_id=\(rejected) reason=TOO_BUSY") { () throws(ServiceError) in
            let response = try await services.restaurant.call(as: .restaurant(restaurantID)) {
                try await $0.rejectOrder(RejectOrderRequest(restaurantId: restaurantID, orderId: rejected, reason: .tooBusy,
                                                            message: "back in an hour"), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.status == "REJECTED",
                           pass: "order rejected: \(rejected)", fail: "expected REJECTED, got \(response.status)")
        }

        try await steps.watchAutomaticAssignment(of: accepted, services, watch)

        _ = try await steps.run("The kitchen marks \(accepted) ready", sent: "MarkOrderReady restaurant_id=\(restaurantID) order_id=\(accepted)") { () throws(ServiceError) in
            let response = try await services.restaurant.call(as: .restaurant(restaurantID)) {
                try await $0.markOrderReady(MarkOrderReadyRequest(restaurantId: restaurantID, orderId: accepted), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.kitchenStatus == "READY",
                           pass: "ready for pickup: \(accepted) (status \(response.status), kitchen READY)", fail: "expected kitchen_status READY")
        }

        _ = try await steps.run("Reassign \(accepted) to a driver by hand",
                                sent: "AssignDriver order_id=\(accepted) driver_id=\(handDriver)") { () throws(ServiceError) in
            let response = try await services.delivery.call {
                try await $0.assignDriver(AssignDriverRequest(orderId: accepted, driverId: handDriver), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.status == "ASSIGNED",
                           pass: "driver assigned by hand: \(accepted) -> \(handDriver)", fail: "expected ASSIGNED, got \(response.status)")
        }
        for stage in ["PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"] {
            _ = try await steps.run("The driver reports \(stage)",
                                    sent: "UpdateDeliveryStatus order_id=\(accepted) status=\(stage)") { () throws(ServiceError) in
                let response = try await services.delivery.call(as: .driver(handDriver)) {
                    try await $0.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: accepted, status: stage), options: $1)
                }
                return Outcome((), got: response.summary, ok: response.status == stage,
                               pass: "delivery status: \(stage)", fail: "expected \(stage), got \(response.status)")
            }
        }
        _ = try await steps.run("List \(handDriver)'s assignments", sent: "GetDriverAssignments driver_id=\(handDriver)") { () throws(ServiceError) in
            let response = try await services.delivery.call(as: .driver(handDriver)) {
                try await $0.getDriverAssignments(GetDriverAssignmentsRequest(driverId: handDriver), options: $1)
            }
            let ok = response.assignments.contains { $0.orderId == accepted && $0.status == "DELIVERED" }
            return Outcome((), got: response.summary, ok: ok,
                           pass: "\(handDriver) delivered \(accepted)", fail: "expected \(accepted) DELIVERED in the list")
        }
        _ = try await steps.run("Read the order's final status", sent: "GetOrderStatus order_id=\(accepted)") { () throws(ServiceError) in
            let response = try await services.order.call(as: .customer(customer)) {
                try await $0.getOrderStatus(GetOrderStatusRequest(orderId: accepted), options: $1)
            }
            return Outcome((), got: response.summary, ok: response.status == "DELIVERED",
                           pass: "delivered: \(accepted)", fail: "expected DELIVERED, got \(response.status)")
        }
        _ = try await steps.run("What the WatchOrder stream showed", sent: "(the stream opened before the accept)") { () throws(ServiceError) in
            var updates: [OrderUpdate] = []
            while let update = try await live.next() { updates.append(update) }
            // Each update as status/kitchen stage: the kitchen's READY comes as an update of its own.
            let statuses = updates.map { $0.kitchenStatus.isEmpty ? $0.status : "\($0.status)/\($0.kitchenStatus)" }
            let expected = ["ACCEPTED/PREPARING", "ASSIGNED/PREPARING", "ASSIGNED/READY", "ASSIGNED/READY", "PICKED_UP/READY",
                            "OUT_FOR_DELIVERY/READY", "DELIVERED/READY"]
            let drivers = updates.filter { $0.status == "ASSIGNED" }.map(\.driverId)
            return Outcome((), got: statuses.joined(separator: " → ") + (updates.last?.final == true ? " (final, stream ended)" : ""),
                           ok: statuses == expected && drivers.last == handDriver && updates.last?.final == true,
                           pass: "every stage arrived live, in order, and the stream ended with the order",
                           fail: "expected \(expected.joined(separator: " → ")), ending final")
        }
    }

    /// One PlaceOrder step; returns the new order's id.
    private func place(_ request: PlaceOrderRequest, title: String, _ services: Services, _ steps: inout Steps) async throws(StepFailed) -> String {
        let restaurantField = request.restaurantId.isEmpty ? "" : " restaurant_id=\(request.restaurantId)"
        let what = request.lines.isEmpty
            ? "items=[\(request.items.joined(separator: ", "))] total_price=\(request.totalPrice)"
            : "lines=[\(request.lines.map { "\($0.quantity) x \($0.menuItemId)" + ($0.note.isEmpty ? "" : " (\($0.note))") }.joined(separator: ", "))]"
                + " request_id=\(request.requestId) delivery_address=\(request.deliveryAddress.street), \(request.deliveryAddress.city)"
        let sent = "PlaceOrder customer_id=\(request.customerId) " + what + restaurantField
        return try await steps.run(title, sent: sent) { () throws(ServiceError) in
            let response = try await services.order.call(as: .customer(request.customerId)) { try await $0.placeOrder(request, options: $1) }
            return Outcome(response.orderId, got: response.summary, ok: response.status == "PLACED" && !response.orderId.isEmpty,
                           pass: "order placed: \(response.orderId)", fail: "expected a new PLACED order")
        }
    }
}

/// A WatchOrder stream read in the background, so the tour can change the order meanwhile and
/// read the updates as they came.
final class LiveOrder: Sendable {
    private let updates: AsyncStream<Result<OrderUpdate, ServiceError>>
    private let task: Task<Void, Never>
    private let address: TargetAddress

    /// Watches as the order's customer would.
    init(_ orderID: String, customer: String, _ services: Services) {
        let (updates, sink) = AsyncStream<Result<OrderUpdate, ServiceError>>.makeStream()
        self.updates = updates
        address = services.order.address
        task = Task {
            do throws(ServiceError) {
                try await services.order.stream(as: .customer(customer), timeout: .seconds(60)) { client, options in
                    try await client.watchOrder(WatchOrderRequest(orderId: orderID), options: options) { stream in
                        for try await update in stream { sink.yield(.success(update)) }
                    }
                }
            } catch {
                sink.yield(.failure(error))
            }
            sink.finish()
        }
    }

    /// The next update, nil once the stream has ended; waits at most 10 s.
    func next() async throws(ServiceError) -> OrderUpdate? {
        let updates = self.updates
        let next = await withTaskGroup(of: Result<OrderUpdate, ServiceError>??.self) { group in
            group.addTask {
                var iterator = updates.makeAsyncIterator()
                return .some(await iterator.next())
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let next else {
            throw ServiceError(service: "OrderService", address: address,
                               error: RPCError(.deadlineExceeded, "no update from WatchOrder within 10 s"))
        }
        return try next?.get()
    }

    func stop() { task.cancel() }
}
