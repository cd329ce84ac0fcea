// The access policy end to end, with real Ed25519 tokens over real sockets: every row of the
// authorization table (README "Who may call what") with the callers it allows and those it
// refuses, every kind of bad token, the order-id probe that must look like an unknown order, and
// the restaurant-to-order hop with and without a valid service token.
import CallerTokens
import COpenSSL
import DeliveryLogic
import Foundation
import GRPCHTTP2
import PlatformAuth
import PlatformProtos
import Testing

/// Call options carrying `token` (nil: none). The deadline only keeps a broken test from
/// hanging: a loaded machine running the suites in parallel has stalled calls for 5 s.
func bearer(_ token: String?) -> CallOptions {
    var metadata = Metadata()
    if let token { metadata.add("authorization", "Bearer \(token)") }
    return CallOptions(timeout: .seconds(30), metadata: metadata)
}

/// The status `body` failed with (nil if it succeeded), and its message.
func outcome<T>(_ body: () async throws -> T) async -> (code: StatusCode?, message: String) {
    do {
        _ = try await body()
        return (nil, "")
    } catch let error as RPCError {
        return (error.code, error.message)
    } catch {
        return (.unknown, "\(error)")
    }
}

/// A token signed with `key` over any header and claims (for the malformed cases).
func handmadeToken(header: String, claims: String, sign: ([UInt8]) -> [UInt8]) -> String {
    let signed = Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(Array(claims.utf8))
    return signed + "." + Base64URL.encode(sign(Array(signed.utf8)))
}

/// HMAC-SHA256, for the "HS256 signed with the public key" attack.
func hmacSHA256(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 32
    _ = HMAC(EVP_sha256(), key, Int32(key.count), message, message.count, &out, &length)
    return out
}

@Suite struct AuthorizationTests {
    @Test func everyBadTokenIsUnauthenticatedWithItsReason() async throws {
        try await withPlatform(auth: true) { platform in
            let keys = try #require(platform.keys)
            let now = Date().timeIntervalSince1970
            let claims = #"{"sub":"c1","role":"customer","exp":\#(Int(now) + 600)}"#
            let publicPEM = Array(try String(contentsOfFile: keys.publicKeyFile, encoding: .utf8).utf8)
            let privateKey = try Ed25519PrivateKey(pemFile: keys.directory + "/signing.key")
            let other = try TestKeys()
            let cases: [(String?, String)] = [
                (nil, "no authorization"),
                ("", "not a Bearer token"),
                ("garbage", "not a JWT"),
                (handmadeToken(header: #"{"alg":"none"}"#, claims: claims) { _ in [] }, "signed with none"),
                (handmadeToken(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: claims) { hmacSHA256(key: publicPEM, $0) }, "signed with HS256"),
                (keys.token("customer", "c1", lifetime: -120), "expired"),
                (other.token("customer", "c1"), "does not match any trusted key"),
                (handmadeToken(header: #"{"alg":"EdDSA"}"#, claims: #"{"sub":"c1","role":"customer"}"#) { privateKey.sign($0) }, "no exp"),
                (handmadeToken(header: #"{"alg":"EdDSA"}"#, claims: #"{"role":"customer","exp":\#(Int(now) + 600)}"#) { privateKey.sign($0) }, "no sub"),
                (keys.token("chef", "c1"), "unknown role chef"),
                (String(repeating: "a", count: 9000), "larger than"),
                // A valid token spelled another way (padding added): only the canonical text counts.
                (keys.token("customer", "c1") + "==", "not a JWT"),
            ]
            let request = PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 1)
            for (token, reason) in cases {
                let options = token == "" ? CallOptions(metadata: { var m = Metadata(); m.add("authorization", "Basic abc"); return m }()) : bearer(token)
                let result = await outcome { try await platform.orders.placeOrder(request, options: options) }
                #expect(result.code == .unauthenticated, "\(reason): \(result)")
                #expect(result.message.contains(reason), "expected '\(reason)' in '\(result.message)'")
            }
            #expect(try await platform.streamLength() == 0)  // nothing was placed
        }
    }

    @Test func theWholeTableByRole() async throws {
        try await withPlatform(drivers: ["d1"], auth: true) { platform in
            let keys = try #require(platform.keys)
            let (c1, c2) = (keys.token("customer", "c1"), keys.token("customer", "c2"))
            let (r1, r2) = (keys.token("restaurant", "r1"), keys.token("restaurant", "r2"))
            let (d1, d2) = (keys.token("driver", "d1"), keys.token("driver", "d2"))
            let op = keys.token("operator", "ops")
            let service = keys.token("service", "restaurant-service")
            let orders = platform.orders, restaurants = platform.restaurants, deliveries = platform.deliveries

            // PlaceOrder: the customer named in the request, or an operator.
            func place(_ token: String, customer: String = "c1") async -> StatusCode? {
                await outcome { try await orders.placeOrder(PlaceOrderRequest(customerId: customer, items: ["tea"], totalPrice: 2, restaurantId: "r1"), options: bearer(token)) }.code
            }
            #expect(await place(c1) == nil)
            #expect(await place(op) == nil)
            for token in [c2, r1, d1, service] { #expect(await place(token) == .permissionDenied) }
            let o1 = try await orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2, restaurantId: "r1"), options: bearer(c1)).orderId

            // AcceptOrder and RejectOrder: the restaurant named in the request, or an operator.
            #expect(await outcome { try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: o1), options: bearer(r2)) }.code == .permissionDenied)
            #expect(await outcome { try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r2", orderId: o1), options: bearer(r2)) }.code == .permissionDenied)
            #expect(await outcome { try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: o1), options: bearer(c1)) }.code == .permissionDenied)
            #expect(try await restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: o1), options: bearer(r1)).status == "ACCEPTED")
            await eventually("assigned to d1") { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: o1), options: bearer(op)).status == "ASSIGNED" }

            // GetOrderStatus: the order's customer, restaurant, driver, or an operator; anyone
            // else of those roles sees exactly what an unknown order looks like.
            func read(_ token: String, _ id: String = o1) async -> (code: StatusCode?, message: String) {
                await outcome { try await orders.getOrderStatus(GetOrderStatusRequest(orderId: id), options: bearer(token)) }
            }
            for token in [c1, r1, d1, op] { #expect(await read(token).code == nil) }
            let unknown = await read(c1, "order_999999")
            #expect(unknown.code == .notFound)
            for token in [c2, r2, d2] {
                let probe = await read(token)
                #expect(probe.code == .notFound && probe.message == unknown.message.replacingOccurrences(of: "order_999999", with: o1))
            }
            #expect(await read(service).code == .permissionDenied)

            // WatchOrder follows the same rule.
            func watch(_ token: String) async -> StatusCode? {
                await outcome {
                    try await orders.watchOrder(WatchOrderRequest(orderId: o1), options: bearer(token)) { updates in
                        var iterator = updates.makeAsyncIterator()
                        return try await iterator.next()?.status
                    }
                }.code
            }
            for token in [c1, r1, d1, op] { #expect(await watch(token) == nil) }
            for token in [c2, r2, d2] { #expect(await watch(token) == .notFound) }

            // CancelOrder: the order's customer or restaurant, or an operator (each by its rules:
            // a restaurant cannot cancel a PLACED order, it rejects it).
            let o2 = try await orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2, restaurantId: "r1"), options: bearer(c1)).orderId
            func cancel(_ token: String, _ id: String) async -> StatusCode? {
                await outcome { try await orders.cancelOrder(CancelOrderRequest(orderId: id), options: bearer(token)) }.code
            }
            #expect(await cancel(c2, o2) == .notFound)
            #expect(await cancel(r2, o2) == .notFound)
            #expect(await cancel(r1, o2) == nil)
            #expect(try await orders.getOrderStatus(GetOrderStatusRequest(orderId: o2), options: bearer(c1)).status == "PLACED")
            #expect(await cancel(d1, o2) == .permissionDenied)
            #expect(await cancel(c1, o2) == nil)

            // RecordRestaurantDecision: the service role only (not even an operator).
            let o3 = try await orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2, restaurantId: "r1"), options: bearer(c1)).orderId
            func decide(_ token: String) async -> StatusCode? {
                await outcome { try await orders.recordRestaurantDecision(RecordRestaurantDecisionRequest(orderId: o3, restaurantId: "r1", decision: "REJECTED"), options: bearer(token)) }.code
            }
            for token in [op, r1, c1, d1] { #expect(await decide(token) == .permissionDenied) }
            #expect(await decide(service) == nil)

            // UpdateMenu: the restaurant named, or an operator; GetMenu: any caller with a token.
            func updateMenu(_ token: String, _ restaurant: String = "r1") async -> StatusCode? {
                await outcome { try await restaurants.updateMenu(UpdateMenuRequest(restaurantId: restaurant, items: [MenuItem(itemId: "tea", name: "Tea", price: 2)]), options: bearer(token)) }.code
            }
            #expect(await updateMenu(r1) == nil)
            #expect(await updateMenu(op) == nil)
            for token in [r2, c1, d1, service] { #expect(await updateMenu(token) == .permissionDenied) }
            func shift(_ token: String) async -> StatusCode? {
                await outcome { try await deliveries.setDriverAvailability(SetDriverAvailabilityRequest(driverId: "d1", status: .onShift),
                                                                           options: bearer(token)) }.code
            }
            #expect(await shift(d1) == nil)
            #expect(await shift(op) == nil)
            for token in [d2, c1, r1, service] { #expect(await shift(token) == .permissionDenied) }
            func pause(_ token: String) async -> StatusCode? {
                await outcome { try await restaurants.setRestaurantStatus(SetRestaurantStatusRequest(restaurantId: "r1", status: .open),
                                                                          options: bearer(token)) }.code
            }
            #expect(await pause(r1) == nil)
            #expect(await pause(op) == nil)
            for token in [r2, c1, d1, service] { #expect(await pause(token) == .permissionDenied) }
            for token in [c2, d2, r2, op] {
                #expect(await outcome { try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1"), options: bearer(token)) }.code == nil)
            }
            #expect(await outcome { try await restaurants.getMenu(GetMenuRequest(restaurantId: "r1"), options: bearer(nil)) }.code == .unauthenticated)

            // WatchRestaurantOrders: the restaurant named, or an operator.
            func watchKitchen(_ token: String) async -> StatusCode? {
                await outcome {
                    try await restaurants.watchRestaurantOrders(WatchRestaurantOrdersRequest(restaurantId: "r1"),
                                                                options: CallOptions(timeout: .milliseconds(300), metadata: bearer(token).metadata)) { updates in
                        for try await _ in updates {}
                    }
                }.code
            }
            #expect(await watchKitchen(r1) == .deadlineExceeded)  // allowed: it ran until the deadline
            #expect(await watchKitchen(op) == .deadlineExceeded)
            for token in [r2, c1] { #expect(await watchKitchen(token) == .permissionDenied) }

            // UpdateDeliveryStatus: the driver of the current assignment, or an operator.
            func stage(_ token: String, _ status: String) async -> StatusCode? {
                await outcome { try await deliveries.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: o1, status: status), options: bearer(token)) }.code
            }
            #expect(await stage(d2, "PICKED_UP") == .notFound)
            for token in [c1, r1, service] { #expect(await stage(token, "PICKED_UP") == .permissionDenied) }
            #expect(await stage(d1, "PICKED_UP") == nil)
            #expect(await stage(op, "OUT_FOR_DELIVERY") == nil)

            // GetDriverAssignments and WatchDriverAssignments: that driver, or an operator.
            func assignments(_ token: String, _ driver: String = "d1") async -> StatusCode? {
                await outcome { try await deliveries.getDriverAssignments(GetDriverAssignmentsRequest(driverId: driver), options: bearer(token)) }.code
            }
            #expect(await assignments(d1) == nil)
            #expect(await assignments(op) == nil)
            for token in [d2, c1, r1] { #expect(await assignments(token) == .permissionDenied) }
            #expect(await outcome {
                try await deliveries.watchDriverAssignments(WatchDriverAssignmentsRequest(driverId: "d1"), options: bearer(d2)) { updates in
                    for try await _ in updates {}
                }
            }.code == .permissionDenied)

            // AssignDriver: an operator.
            for token in [d1, r1, c1, service] {
                #expect(await outcome { try await deliveries.assignDriver(AssignDriverRequest(orderId: o1, driverId: "d2"), options: bearer(token)) }.code == .permissionDenied)
            }
            #expect(await outcome { try await deliveries.assignDriver(AssignDriverRequest(orderId: o1, driverId: "d2"), options: bearer(op)) }.code == nil)
            // Now d2 drives it, and d1 may no longer report on it.
            #expect(await stage(d1, "DELIVERED") == .notFound)
            #expect(await stage(d2, "DELIVERED") == nil)
        }
    }

    @Test func aMalformedIdStaysInvalidArgumentForAParty() async throws {
        try await withPlatform(auth: true) { platform in
            let keys = try #require(platform.keys)
            let result = await outcome { try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: "not valid"), options: bearer(keys.token("customer", "c1"))) }
            #expect(result.code == .invalidArgument)
        }
    }

    @Test func withoutAValidServiceTokenTheHopFailsAndNothingChanges() async throws {
        try await withPlatform(auth: true) { platform in
            let keys = try #require(platform.keys)
            let id = try await platform.orders.placeOrder(PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2, restaurantId: "r1"),
                                                         options: bearer(keys.token("customer", "c1"))).orderId
            // Replace the restaurant service's token with one the order service does not trust.
            let impostor = try TestKeys()
            try impostor.token("service", "restaurant-service").write(toFile: keys.serviceTokenFile, atomically: true, encoding: .utf8)
            try await Task.sleep(for: .milliseconds(1100))  // the file is checked at most once a second
            let refused = await outcome { try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id), options: bearer(keys.token("restaurant", "r1"))) }
            #expect(refused.code == .unavailable, "\(refused)")
            #expect(try await platform.orders.getOrderStatus(GetOrderStatusRequest(orderId: id), options: bearer(keys.token("operator", "ops"))).status == "PLACED")
            // A valid token again, picked up without a restart.
            try keys.token("service", "restaurant-service").write(toFile: keys.serviceTokenFile, atomically: true, encoding: .utf8)
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try await platform.restaurants.acceptOrder(AcceptOrderRequest(restaurantId: "r1", orderId: id), options: bearer(keys.token("restaurant", "r1"))).status == "ACCEPTED")
        }
    }

    @Test func aVerifiedTokenIsCheckedOnceUntilItExpires() throws {
        let keys = try TestKeys()
        let cache = TokenCache(verifier: TokenVerifier(keys: keys.publicKeys))
        let now = Date().timeIntervalSince1970
        let token = keys.token("customer", "c1", lifetime: 60)
        let first = try cache.claims(for: token, now: now)
        #expect(first.subject == "c1" && first.role == "customer")
        #expect(try cache.claims(for: token, now: now + 1) == first)
        #expect(cache.count == 1)
        #expect(throws: TokenError("the token expired")) { try cache.claims(for: token, now: now + 60 + TokenVerifier.clockSkew + 1) }
    }

    @Test func anAudienceIsCheckedWhenConfigured() throws {
        let keys = try TestKeys()
        let verifier = TokenVerifier(keys: keys.publicKeys, audience: "food-platform")
        let now = Date().timeIntervalSince1970
        let signer = keys.signer
        #expect(try verifier.verify(signer.token(subject: "c1", role: "customer", lifetime: 60, now: now, audience: "food-platform"), now: now).subject == "c1")
        #expect(throws: TokenError("the token is not meant for food-platform")) {
            try verifier.verify(signer.token(subject: "c1", role: "customer", lifetime: 60, now: now, audience: "elsewhere"), now: now)
        }
        #expect(throws: TokenError("the token is not meant for food-platform")) {
            try verifier.verify(signer.token(subject: "c1", role: "customer", lifetime: 60, now: now), now: now)
        }
    }
}
