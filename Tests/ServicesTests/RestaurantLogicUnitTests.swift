// The restaurant service's own rules, without a server: RestaurantServiceLogic on a menu store in
// memory, reaching the order service through a transport double. Checked: menu validation before
// any storage, the order items keep, storage failures as UNAVAILABLE or INTERNAL, the decision
// sent to the order service, and which answer of the order service becomes which status for the
// restaurant (its own credentials refused is UNAVAILABLE: the caller did nothing wrong).
import PlatformCommon
import PlatformProtos
@testable import RestaurantLogic
import RPCCore
import Synchronization
import Testing

/// A MenuStore in memory.
final class InMemoryMenuStore: MenuStore {
    let menus = Mutex<[String: [MenuItem]]>([:])
    let currencies = Mutex<[String: String]>([:])
    let pauses = Mutex<[String: Pause]>([:])
    let failure = Mutex<StorageError?>(nil)

    func update(_ restaurant: String, items: [MenuItem], setting currency: String?, pricedIn: String) async throws(StorageError) -> MenuUpdate {
        if let failure = failure.withLock({ $0 }) { throw failure }
        let current = currencies.withLock { $0[restaurant] } ?? Money.defaultCurrency
        if currency == nil, current != pricedIn { return .currencyChanged }
        if let currency, currency != current {
            let given = Set(items.map(\.itemId))
            guard (menus.withLock { $0[restaurant] } ?? []).allSatisfy({ given.contains($0.itemId) }) else { return .everyItemNeeded }
        }
        if let currency { currencies.withLock { $0[restaurant] = currency } }
        menus.withLock { menus in
            var menu = menus[restaurant] ?? []
            for item in items {
                if let index = menu.firstIndex(where: { $0.itemId == item.itemId }) { menu[index] = item } else { menu.append(item) }
            }
            menus[restaurant] = menu
        }
        return .updated
    }

    func currency(of restaurant: String) async throws(StorageError) -> String {
        if let failure = failure.withLock({ $0 }) { throw failure }
        return currencies.withLock { $0[restaurant] } ?? Money.defaultCurrency
    }

    func menu(of restaurant: String) async throws(StorageError) -> Menu {
        if let failure = failure.withLock({ $0 }) { throw failure }
        return Menu(items: menus.withLock { $0[restaurant] ?? [] }, currency: try await currency(of: restaurant),
                    pause: pauses.withLock { $0[restaurant] })
    }

    func setPause(_ restaurant: String, _ pause: Pause?) async throws(StorageError) {
        if let failure = failure.withLock({ $0 }) { throw failure }
        pauses.withLock { $0[restaurant] = pause }
    }
}

/// The order service as a transport double: records each RecordRestaurantDecision and answers
/// with `answer` (the decision itself when nil).
final class OrderServiceDouble: ClientTransport {
    let requests = Mutex<[RecordRestaurantDecisionRequest]>([])
    let answer = Mutex<RPCError?>(nil)

    func unary(path: String, request: [UInt8], options: CallOptions) async throws(RPCError) -> UnaryResponse {
        guard path == OrderServiceMethods.recordRestaurantDecision.path else { throw RPCError(.unimplemented, path) }
        let decision: RecordRestaurantDecisionRequest
        do { decision = try RecordRestaurantDecisionRequest(serializedBytes: request) } catch { throw RPCError(.internal, "\(error)") }
        requests.withLock { $0.append(decision) }
        if let error = answer.withLock({ $0 }) { throw error }
        let response = RecordRestaurantDecisionResponse(orderId: decision.orderId, status: decision.decision)
        return UnaryResponse(message: response.serializedBytes(), headers: Metadata(), trailers: Metadata())
    }

    func withStream<Result: Sendable>(path: String, options: CallOptions, _ body: (any ClientStream) async throws -> Result) async throws -> Result {
        throw RPCError(.unimplemented, "no streams here")
    }
}

@Suite struct RestaurantLogicUnitTests {
    private let context = ServerContext(path: "/test", requestMetadata: Metadata(), deadline: nil)

    private func withLogic(_ menus: InMemoryMenuStore, _ orders: OrderServiceDouble,
                           _ body: (RestaurantServiceLogic) async throws -> Void) async throws {
        try await withUnreachableHub { hub in try await body(RestaurantServiceLogic(menus: menus, orders: OrderServiceClient(transport: orders),
                                              hub: hub, logger: quietLogger)) }
    }


    @Test func menusAreValidatedBeforeStorageAndKeepTheirOrder() async throws {
        let menus = InMemoryMenuStore()
        try await withLogic(menus, OrderServiceDouble()) { logic in
            let soup = MenuItem(itemId: "soup", name: "Soup", price: 4.5, description: "hot")
            let bad: [[MenuItem]] = [
                [], [MenuItem(itemId: "", name: "x", price: 1)], [MenuItem(itemId: "a", name: "", price: 1)],
                [MenuItem(itemId: "a", name: "x", price: -1)], [MenuItem(itemId: "a", name: String(repeating: "n", count: 1025), price: 1)],
            ]
            for items in bad {
                #expect(await statusCode { try await logic.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: items), context: context) }
                    == .invalidArgument)
            }
            #expect(menus.menus.withLock { $0.isEmpty })
            #expect(await statusCode { try await logic.getMenu(GetMenuRequest(restaurantId: "r1"), context: context) } == .notFound)
            _ = try await logic.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [soup, MenuItem(itemId: "tea", name: "Tea", price: 2)]),
                                           context: context)
            _ = try await logic.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "soup", name: "Soup", price: 5)]),
                                           context: context)
            let menu = try await logic.getMenu(GetMenuRequest(restaurantId: "r1"), context: context)
            #expect(menu.items.map(\.itemId) == ["soup", "tea"] && menu.items.first?.price == 5)

            menus.failure.withLock { $0 = StorageError(.unavailable, "down") }
            #expect(await statusCode { try await logic.getMenu(GetMenuRequest(restaurantId: "r1"), context: context) } == .unavailable)
            menus.failure.withLock { $0 = StorageError(.failed, "broken") }
            #expect(await statusCode { try await logic.updateMenu(UpdateMenuRequest(restaurantId: "r1", items: [soup]), context: context) }
                == .internal)
        }
    }

    @Test func decisionsGoToTheOrderServiceAndItsAnswersBecomeTheRestaurantsStatuses() async throws {
        let orders = OrderServiceDouble()
        try await withLogic(InMemoryMenuStore(), orders) { logic in
            let accept = AcceptOrderRequest(restaurantId: "r1", orderId: "order_1")
            let accepted = try await logic.acceptOrder(accept, context: context)
            let rejected = try await logic.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: "order_2"), context: context)
            #expect(accepted.status == "ACCEPTED" && rejected.status == "REJECTED")
            _ = try await logic.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: "order_3", prepMinutes: 15), context: context)
            _ = try await logic.rejectOrder(RejectOrderRequest(restaurantId: "r1", orderId: "order_4", reason: .outOfStock, message: "no flour"),
                                            context: context)
            // A rejection without a reason is OTHER.
            #expect(orders.requests.withLock { $0 } == [
                RecordRestaurantDecisionRequest(orderId: "order_1", restaurantId: "r1", decision: "ACCEPTED"),
                RecordRestaurantDecisionRequest(orderId: "order_2", restaurantId: "r1", decision: "REJECTED", rejectReason: "OTHER"),
                RecordRestaurantDecisionRequest(orderId: "order_3", restaurantId: "r1", decision: "ACCEPTED", prepMinutes: 15),
                RecordRestaurantDecisionRequest(orderId: "order_4", restaurantId: "r1", decision: "REJECTED", rejectReason: "OUT_OF_STOCK",
                                                rejectMessage: "no flour"),
            ])
            #expect(await statusCode { try await logic.acceptOrder(AcceptOrderRequest(restaurantId: "", orderId: "order_1"), context: context) }
                == .invalidArgument)
            #expect(orders.requests.withLock { $0.count } == 4, "an invalid request never reaches the order service")

            let answers: [(StatusCode, StatusCode)] = [
                (.notFound, .notFound), (.failedPrecondition, .failedPrecondition), (.permissionDenied, .permissionDenied),
                (.unavailable, .unavailable), (.deadlineExceeded, .deadlineExceeded), (.unauthenticated, .unavailable),
                (.internal, .internal), (.resourceExhausted, .internal),
            ]
            for (answer, expected) in answers {
                orders.answer.withLock { $0 = RPCError(answer, "the order service says so") }
                #expect(await statusCode { try await logic.acceptOrder(accept, context: context) } == expected, "order service: \(answer)")
            }
        }
    }
}
