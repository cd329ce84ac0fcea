// One subcommand per RPC, for scripts: `test-client order place ...`, `restaurant menu ...`,
// `delivery assignments ...`. Each makes exactly one call, prints the response as `field: value`
// lines and exits 0; on a gRPC error it prints one line naming the service, address and status
// on standard error and exits 1. The `watch` commands follow a stream instead: one line per
// update as it arrives, exit 0 when the stream ends (or after `--count` updates). The request is built from the flags as given: validation is the
// services' job, so a script sees the same INVALID_ARGUMENT any client would.
import ArgumentParser
import FoundationEssentials
import PlatformProtos

/// Makes one call, prints its response, and turns a failure into a one-line error and exit 1.
func printResponse<Response: FieldListing>(
    _ options: ConnectionOptions, _ call: (Services) async throws(ServiceError) -> Response
) async throws {
    let services = try options.connect()
    defer { services.close() }
    do {
        print(try await call(services).listing)
    } catch {
        printError("✗ \(error)")
        throw ExitCode.failure
    }
}

/// Follows one stream, printing each update on a line as it arrives; stops after `count` updates
/// when given. A failure prints one line and exits 1.
func printUpdates<Update: FieldListing>(
    _ options: ConnectionOptions, count: Int?,
    _ follow: (Services, _ handle: (Update) -> Bool) async throws(ServiceError) -> Void
) async throws {
    let services = try options.connect()
    defer { services.close() }
    var printed = 0
    do {
        try await follow(services) { update in
            print(update.summary)
            printed += 1
            return count.map { printed < $0 } ?? true
        }
    } catch {
        printError("✗ \(error)")
        throw ExitCode.failure
    }
}

/// `--count`: stop after that many updates.
struct WatchOptions: ParsableArguments {
    @Option(help: "Stop after this many updates (default: until the stream ends, or Ctrl-C).") var count: Int?

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }
}

/// Reads `updates`, handing each to `handle` until it returns false or the stream ends.
func forEach<Update>(_ updates: RPCAsyncSequence<Update>, _ handle: (Update) -> Bool) async throws {
    for try await update in updates where !handle(update) { return }
}

struct OrderCommands: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order", abstract: "OrderService calls.",
        subcommands: [PlaceOrder.self, OrderStatus.self, CancelOrder.self, ListOrders.self, WatchOrder.self])

    struct PlaceOrder: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "place", abstract: "PlaceOrder: a new order, PLACED.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "customer_id.") var customer: String
        @Option(name: .customLong("item"), help: "A free-text item; repeat for several (with --total).") var items: [String] = []
        @Option(help: "total_price, for free-text items.") var total: Double = 0
        @Option(help: "restaurant_id: only this restaurant may accept or reject the order (required with --line).") var restaurant = ""
        @Option(name: .customLong("line"), help: "A menu line, menu_item_id:quantity[:note], priced by the service; repeat for several.")
        var lines: [String] = []
        @Option(help: "request_id: an idempotency key; the same one again returns the same order.") var requestId = ""
        @Option(help: "delivery_address as street;city[;postal_code[;notes]].") var address: String?

        func run() async throws {
            let request = PlaceOrderRequest(customerId: customer, items: items, totalPrice: total, restaurantId: restaurant,
                                            lines: try lines.map(OrderCommands.parseLine), requestId: requestId,
                                            deliveryAddress: try address.map(OrderCommands.parseAddress) ?? Address())
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.order.call(as: .customer(customer)) { try await $0.placeOrder(request, options: $1) }
            }
        }
    }

    /// `menu_item_id:quantity[:note]`; the note may itself contain colons.
    static func parseLine(_ text: String) throws -> OrderLine {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, let quantity = Int32(parts[1]) else {
            throw ValidationError("--line must be menu_item_id:quantity[:note], got \(text)")
        }
        return OrderLine(menuItemId: parts[0], quantity: quantity, note: parts.count == 3 ? parts[2] : "")
    }

    /// `street;city[;postal_code[;notes]]`.
    static func parseAddress(_ text: String) throws -> Address {
        let parts = text.split(separator: ";", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2 else { throw ValidationError("--address must be street;city[;postal_code[;notes]], got \(text)") }
        return Address(street: parts[0], city: parts[1], postalCode: parts.count > 2 ? parts[2] : "", notes: parts.count > 3 ? parts[3] : "")
    }

    struct OrderStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "GetOrderStatus.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "order_id.") var order: String

        func run() async throws {
            let request = GetOrderStatusRequest(orderId: order)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.order.call { try await $0.getOrderStatus(request, options: $1) }
            }
        }
    }

    struct ListOrders: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "ListOrders: a customer's or a restaurant's orders, newest first.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "customer_id (or --restaurant).") var customer = ""
        @Option(help: "restaurant_id (or --customer).") var restaurant = ""
        @Option(name: .customLong("status"), help: "Only orders in this status; repeat for several.") var statuses: [String] = []
        @Option(help: "page_size (default 50).") var pageSize: Int32 = 0
        @Option(help: "page_token: next_page_token of the previous page.") var pageToken = ""

        func run() async throws {
            let request = ListOrdersRequest(customerId: customer, restaurantId: restaurant, statuses: statuses, pageSize: pageSize, pageToken: pageToken)
            let identity = customer.isEmpty ? (restaurant.isEmpty ? Identity.operator : .restaurant(restaurant)) : .customer(customer)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.order.call(as: identity) { try await $0.listOrders(request, options: $1) }
            }
        }
    }

    struct CancelOrder: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cancel", abstract: "CancelOrder: CANCELED if the caller may cancel it now, else COULD_NOT_CANCEL.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "order_id.") var order: String
        @Option(help: "reason, in words.") var reason = ""
        @Option(help: "Cancel as this customer (default: as an operator).") var customer: String?
        @Option(help: "Cancel as this restaurant (default: as an operator).") var restaurant: String?

        func run() async throws {
            let request = CancelOrderRequest(orderId: order, reason: reason)
            let identity = customer.map(Identity.customer) ?? restaurant.map(Identity.restaurant) ?? .operator
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.order.call(as: identity) { try await $0.cancelOrder(request, options: $1) }
            }
        }
    }
}

extension OrderCommands {
    struct WatchOrder: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "watch", abstract: "WatchOrder: the order's status now, then every change until it is final.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var watch: WatchOptions
        @Option(help: "order_id.") var order: String

        func run() async throws {
            let request = WatchOrderRequest(orderId: order)
            try await printUpdates(connection, count: watch.count) { services, handle throws(ServiceError) in
                try await services.order.stream { client, options in
                    try await client.watchOrder(request, options: options) { try await forEach($0, handle) }
                }
            }
        }
    }
}

struct RestaurantCommands: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restaurant", abstract: "RestaurantService calls.",
        subcommands: [UpdateMenu.self, Menu.self, Status.self, Accept.self, Reject.self, Ready.self, WatchOrders.self])

    struct WatchOrders: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "watch", abstract: "WatchRestaurantOrders: new orders and changes of the restaurant's orders.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var watch: WatchOptions
        @Option(help: "restaurant_id.") var restaurant: String

        func run() async throws {
            let request = WatchRestaurantOrdersRequest(restaurantId: restaurant)
            try await printUpdates(connection, count: watch.count) { services, handle throws(ServiceError) in
                try await services.restaurant.stream(as: .restaurant(restaurant)) { client, options in
                    try await client.watchRestaurantOrders(request, options: options) { try await forEach($0, handle) }
                }
            }
        }
    }

    struct UpdateMenu: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "update-menu", abstract: "UpdateMenu: adds or replaces items.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "restaurant_id.") var restaurant: String
        @Option(name: .customLong("item"), help: "id:name:price[:description]; repeat for several. A price ending in 'c' is in minor units (1250c).")
        var items: [String] = []
        @Option(name: .customLong("unavailable"), help: "An item id to mark unavailable; repeat for several.") var unavailable: [String] = []
        @Option(help: "currency, ISO 4217 (default: the restaurant's, USD when it never had one).") var currency = ""

        func run() async throws {
            var menu = try items.map(Self.parseItem)
            for index in menu.indices where unavailable.contains(menu[index].itemId) { menu[index].unavailable = true }
            let request = UpdateMenuRequest(restaurantId: restaurant, items: menu, currency: currency)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.restaurant.call(as: .restaurant(restaurant)) { try await $0.updateMenu(request, options: $1) }
            }
        }

        /// `id:name:price[:description]`, the price as `12.5` or in minor units as `1250c`; the
        /// description may itself contain colons.
        static func parseItem(_ text: String) throws -> MenuItem {
            let parts = text.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 3 else { throw ValidationError("--item must be id:name:price[:description], got \(text)") }
            var item = MenuItem(itemId: parts[0], name: parts[1], description: parts.count == 4 ? parts[3] : "")
            if parts[2].hasSuffix("c"), let cents = Int64(parts[2].dropLast()) {
                item.priceCents = cents
            } else if let price = Double(parts[2]) {
                item.price = price
            } else {
                throw ValidationError("--item's price must be a number, or minor units ending in c, got \(parts[2])")
            }
            return item
        }
    }

    struct Menu: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "menu", abstract: "GetMenu.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "restaurant_id.") var restaurant: String

        func run() async throws {
            let request = GetMenuRequest(restaurantId: restaurant)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.restaurant.call { try await $0.getMenu(request, options: $1) }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "SetRestaurantStatus: open, or pause.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "restaurant_id.") var restaurant: String
        @Flag(help: "Pause (default: open).") var pause = false
        @Option(help: "With --pause: the pause ends by itself after this many minutes (default: until opened).") var minutes: Int64?

        func run() async throws {
            let until = minutes.map { Int64(Date().timeIntervalSince1970 * 1000) + $0 * 60_000 } ?? 0
            let request = SetRestaurantStatusRequest(restaurantId: restaurant, status: pause ? .paused : .open, pausedUntilUnixMs: until)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.restaurant.call(as: .restaurant(restaurant)) { try await $0.setRestaurantStatus(request, options: $1) }
            }
        }
    }

    struct Accept: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "accept", abstract: "AcceptOrder: PLACED -> ACCEPTED.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "restaurant_id.") var restaurant: String
        @Option(help: "order_id.") var order: String
        @Option(help: "prep_minutes: when the food will be ready (1 to 240).") var prepMinutes: Int32 = 0

        func run() async throws {
            let request = AcceptOrderRequest(restaurantId: restaurant, orderId: order, prepMinutes: prepMinutes)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.restaurant.call(as: .restaurant(restaurant)) { try await $0.acceptOrder(request, options: $1) }
            }
        }
    }

    struct Ready: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ready", abstract: "MarkOrderReady: the food is ready for pickup.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "restaurant_id.") var restaurant: String
        @Option(help: "order_id.") var order: String

        func run() async throws {
            let request = MarkOrderReadyRequest(restaurantId: restaurant, orderId: order)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.restaurant.call(as: .restaurant(restaurant)) { try await $0.markOrderReady(request, options: $1) }
            }
        }
    }

    struct Reject: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "reject", abstract: "RejectOrder: PLACED -> REJECTED.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "restaurant_id.") var restaurant: String
        @Option(help: "order_id.") var order: String
        @Option(help: "reason: OUT_OF_STOCK, TOO_BUSY, CLOSED or OTHER (default OTHER).") var reason: String?
        @Option(help: "message: words for the customer.") var message = ""

        func run() async throws {
            let reasons: [String: RejectReason] = ["OUT_OF_STOCK": .outOfStock, "TOO_BUSY": .tooBusy, "CLOSED": .closed, "OTHER": .other]
            guard let chosen = reason.map({ reasons[$0] }) ?? .rejectReasonUnspecified else {
                throw ValidationError("--reason must be OUT_OF_STOCK, TOO_BUSY, CLOSED or OTHER")
            }
            let request = RejectOrderRequest(restaurantId: restaurant, orderId: order, reason: chosen, message: message)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.restaurant.call(as: .restaurant(restaurant)) { try await $0.rejectOrder(request, options: $1) }
            }
        }
    }
}

struct DeliveryCommands: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delivery", abstract: "DeliveryService calls.",
        subcommands: [Assign.self, Update.self, Assignments.self, Shift.self, WatchAssignments.self])

    struct Shift: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "shift", abstract: "SetDriverAvailability: on shift or off.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "driver_id.") var driver: String
        @Flag(help: "Off shift (default: on shift).") var off = false

        func run() async throws {
            let request = SetDriverAvailabilityRequest(driverId: driver, status: off ? .offShift : .onShift)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.delivery.call(as: .driver(driver)) { try await $0.setDriverAvailability(request, options: $1) }
            }
        }
    }

    struct WatchAssignments: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "watch", abstract: "WatchDriverAssignments: the driver's open assignments, then every change.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var watch: WatchOptions
        @Option(help: "driver_id.") var driver: String

        func run() async throws {
            let request = WatchDriverAssignmentsRequest(driverId: driver)
            try await printUpdates(connection, count: watch.count) { services, handle throws(ServiceError) in
                try await services.delivery.stream(as: .driver(driver)) { client, options in
                    try await client.watchDriverAssignments(request, options: options) { try await forEach($0, handle) }
                }
            }
        }
    }

    struct Assign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "assign", abstract: "AssignDriver to an accepted order.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "order_id.") var order: String
        @Option(help: "driver_id.") var driver: String

        func run() async throws {
            let request = AssignDriverRequest(orderId: order, driverId: driver)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.delivery.call { try await $0.assignDriver(request, options: $1) }
            }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "update", abstract: "UpdateDeliveryStatus.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "order_id.") var order: String
        @Option(help: "ASSIGNED, PICKED_UP, OUT_FOR_DELIVERY, DELIVERED or FAILED.") var status: String

        func run() async throws {
            let request = UpdateDeliveryStatusRequest(orderId: order, status: status)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.delivery.call { try await $0.updateDeliveryStatus(request, options: $1) }
            }
        }
    }

    struct Assignments: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "assignments", abstract: "GetDriverAssignments, oldest first.")
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "driver_id.") var driver: String
        @Option(help: "page_size (default: all, up to 1000).") var pageSize: Int32 = 0
        @Option(help: "page_token: next_page_token of the previous page.") var pageToken = ""

        func run() async throws {
            let request = GetDriverAssignmentsRequest(driverId: driver, pageSize: pageSize, pageToken: pageToken)
            try await printResponse(connection) { services throws(ServiceError) in
                try await services.delivery.call(as: .driver(driver)) { try await $0.getDriverAssignments(request, options: $1) }
            }
        }
    }
}
