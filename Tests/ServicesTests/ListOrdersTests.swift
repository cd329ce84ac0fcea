// Order history over gRPC: ListOrders by customer or restaurant, newest first, merged from every
// partition's index, a page at a time with tokens bound to their query, stable while new orders
// come in, filtered by status; and GetDriverAssignments in pages.
@testable import OrderLogic
import PlatformCommon
import PlatformProtos
import Testing

@Suite struct ListOrdersTests {
    /// Every page of `request`, following the tokens.
    private func pages(_ request: ListOrdersRequest, _ orders: OrderServiceClient,
                       between: () async throws -> Void = {}) async throws -> [[OrderSummary]] {
        var request = request
        var pages: [[OrderSummary]] = []
        repeat {
            let page = try await orders.listOrders(request)
            pages.append(page.orders)
            request.pageToken = page.nextPageToken
            try await between()
        } while !request.pageToken.isEmpty && pages.count < 100
        return pages
    }

    @Test func ordersComeNewestFirstInStablePages() async throws {
        try await withPlatform { platform in
            let orders = platform.orders
            var mine: [String] = []
            for index in 0..<25 {
                mine.append(try await platform.placeOrder(customer: "c1", restaurant: "r1"))
                if index % 3 == 0 { _ = try await platform.placeOrder(customer: "c2", restaurant: index % 2 == 0 ? "r1" : "r2") }
            }
            let newestFirst = Array(mine.reversed())
            // New orders placed while paging go before the first page: the later pages are unmoved.
            let paged = try await pages(ListOrdersRequest(customerId: "c1", pageSize: 10), orders) {
                _ = try await platform.placeOrder(customer: "c1", restaurant: "r1")
            }
            #expect(paged.map(\.count) == [10, 10, 5])
            #expect(paged.joined().map(\.orderId) == newestFirst)
            let first = try #require(paged.first?.first)
            #expect(first.customerId == "c1" && first.restaurantId == "r1" && first.status == "PLACED" && first.items == ["pizza"]
                && first.totalPrice == 12.5)
            // The default page holds them all now (25 + 3 placed while paging), newest first.
            let all = try await orders.listOrders(ListOrdersRequest(customerId: "c1"))
            #expect(all.orders.count == 28 && all.nextPageToken.isEmpty && Array(all.orders.suffix(25).map(\.orderId)) == newestFirst)
            // A restaurant's orders, from every customer.
            let restaurant = try await orders.listOrders(ListOrdersRequest(restaurantId: "r2"))
            #expect(restaurant.orders.count == 4 && restaurant.orders.allSatisfy { $0.customerId == "c2" && $0.restaurantId == "r2" })
        }
    }

    @Test func statusesFilterAcrossPages() async throws {
        try await withPlatform { platform in
            let orders = platform.orders
            var canceled: [String] = []
            for index in 0..<12 {
                let id = try await platform.placeOrder(customer: "c1", restaurant: "r1")
                if index % 4 == 0 {
                    _ = try await orders.cancelOrder(CancelOrderRequest(orderId: id))
                    canceled.append(id)
                }
            }
            let paged = try await pages(ListOrdersRequest(customerId: "c1", statuses: ["CANCELED"], pageSize: 2), orders)
            #expect(paged.joined().map(\.orderId) == canceled.reversed())
            #expect(paged.joined().allSatisfy { $0.status == "CANCELED" })
            let placed = try await orders.listOrders(ListOrdersRequest(customerId: "c1", statuses: ["PLACED", "ACCEPTED"]))
            #expect(placed.orders.count == 9)
        }
    }

    @Test func badListsAreInvalidArguments() async throws {
        try await withPlatform { platform in
            let orders = platform.orders
            for _ in 0..<3 { _ = try await platform.placeOrder(customer: "c1") }
            let page = try await orders.listOrders(ListOrdersRequest(customerId: "c1", pageSize: 2))
            #expect(!page.nextPageToken.isEmpty)
            for bad in [ListOrdersRequest(), ListOrdersRequest(customerId: "c1", restaurantId: "r1"),
                        ListOrdersRequest(customerId: "c1", statuses: ["COOKING"]), ListOrdersRequest(customerId: "c1", pageSize: -1),
                        ListOrdersRequest(customerId: "c1", pageToken: "nonsense"),
                        ListOrdersRequest(customerId: "c2", pageSize: 2, pageToken: page.nextPageToken),
                        ListOrdersRequest(customerId: "c1", statuses: ["PLACED"], pageSize: 2, pageToken: page.nextPageToken)] {
                #expect(await statusCode { try await orders.listOrders(bad) } == .invalidArgument, "\(bad)")
            }
            // More than the largest page is the largest page.
            #expect(try await orders.listOrders(ListOrdersRequest(customerId: "c1", pageSize: 5000)).orders.count == 3)
        }
    }

    @Test func onlyTheCustomerOrTheRestaurantListsItsOrders() async throws {
        try await withPlatform(auth: true) { platform in
            let keys = try #require(platform.keys)
            let orders = platform.orders
            _ = try await orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2, restaurantId: "r1"),
                                            options: bearer(keys.token("customer", "c1")))
            func list(_ request: ListOrdersRequest, _ role: String, _ subject: String) async -> StatusCode? {
                await outcome { try await orders.listOrders(request, options: bearer(keys.token(role, subject))) }.code
            }
            #expect(await list(ListOrdersRequest(customerId: "c1"), "customer", "c1") == nil)
            #expect(await list(ListOrdersRequest(restaurantId: "r1"), "restaurant", "r1") == nil)
            #expect(await list(ListOrdersRequest(customerId: "c1"), "operator", "ops") == nil)
            #expect(await list(ListOrdersRequest(customerId: "c1"), "customer", "c2") == .permissionDenied)
            #expect(await list(ListOrdersRequest(restaurantId: "r1"), "restaurant", "r2") == .permissionDenied)
            #expect(await list(ListOrdersRequest(customerId: "c1"), "restaurant", "r1") == .permissionDenied)
            #expect(await list(ListOrdersRequest(customerId: "c1"), "driver", "d1") == .permissionDenied)
        }
    }

    @Test func driverAssignmentsComeInPages() async throws {
        try await withPlatform { platform in
            var ids: [String] = []
            for _ in 0..<5 {
                let id = try await platform.placeAcceptedOrder()
                _ = try await platform.deliveries.assignDriver(AssignDriverRequest(orderId: id, driverId: "d9"))
                ids.append(id)
            }
            let deliveries = platform.deliveries
            let all = try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d9"))
            #expect(all.assignments.map(\.orderId) == ids && all.nextPageToken.isEmpty)
            var request = GetDriverAssignmentsRequest(driverId: "d9", pageSize: 2)
            var seen: [[String]] = []
            repeat {
                let page = try await deliveries.getDriverAssignments(request)
                seen.append(page.assignments.map(\.orderId))
                request.pageToken = page.nextPageToken
            } while !request.pageToken.isEmpty && seen.count < 10
            #expect(seen == [Array(ids[0..<2]), Array(ids[2..<4]), [ids[4]]])
            let token = try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d9", pageSize: 2)).nextPageToken
            for bad in [GetDriverAssignmentsRequest(driverId: "d8", pageSize: 2, pageToken: token),
                        GetDriverAssignmentsRequest(driverId: "d9", pageSize: -1), GetDriverAssignmentsRequest(driverId: "d9", pageToken: "x")] {
                #expect(await statusCode { try await deliveries.getDriverAssignments(bad) } == .invalidArgument, "\(bad)")
            }
        }
    }
}
