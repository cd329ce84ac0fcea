// Who may call what: the platform's whole authorization table, enforced in one place for every
// RPC of every service, as an interceptor that runs before each handler (RPCCore's
// `ServerInterceptor`). README.md shows the same table.
//
// A call is authenticated from `authorization: Bearer <JWT>` (Ed25519, see CallerTokens; the
// verified claims are cached per token), then checked against its method's rule:
// - by role alone (RecordRestaurantDecision: the `service` role; AssignDriver: an operator);
// - by ownership of a request field (PlaceOrder: the customer named in `customer_id`;
//   the restaurant named in `restaurant_id`; the driver named in `driver_id`);
// - by the order's parties (GetOrderStatus, WatchOrder, CancelOrder, UpdateDeliveryStatus): the
//   service that owns the order looks its parties up (`OrderPartiesLookup`), so the rule itself
//   stays here. A caller of an allowed role who is not a party of the order gets exactly the
//   NOT_FOUND an unknown order gets, so order ids cannot be probed.
// An operator may do everything but the service-only RecordRestaurantDecision; health and
// reflection are open, as probes and tools expect;
// a method without a rule is refused (a new RPC is closed until the table names it). No token, or
// a bad one, is UNAUTHENTICATED with the reason; a valid caller outside its rights is
// PERMISSION_DENIED. Every state change ends with one audit log line: the caller, the RPC, the
// order and the outcome.
import CallerTokens
import Logging
import PlatformCommon
import PlatformProtos
import RPCCore
#if canImport(Glibc)
import Glibc
#endif

/// The roles a caller's token can carry.
public enum Role: String, Sendable, CaseIterable {
    case customer, restaurant, driver, `operator`, service
}

/// Who is calling, from a verified token.
public struct Caller: Sendable, Equatable, CustomStringConvertible {
    public let subject: String
    public let role: Role

    public init(subject: String, role: Role) {
        self.subject = subject
        self.role = role
    }

    public var description: String { "\(role.rawValue):\(subject)" }
}

/// Where the policy leaves the caller for the handler.
public enum CallerKey: ServerContextKey {
    public typealias Value = Caller
}

extension ServerContext {
    /// The authenticated caller (nil when authentication is off or the method is open).
    public var caller: Caller? { self[CallerKey.self] }
}

/// The parties of one order, as the service that owns it knows them (nil: not known there).
public struct OrderParties: Sendable, Equatable {
    public var customer: String?
    public var restaurant: String?
    public var driver: String?

    public init(customer: String? = nil, restaurant: String? = nil, driver: String? = nil) {
        self.customer = customer
        self.restaurant = restaurant
        self.driver = driver
    }
}

/// Finds an order's parties; nil when the order is unknown. `caller` lets a service that learns
/// parties from events catch up first when the caller is not (yet) among them.
public protocol OrderPartiesLookup: Sendable {
    func parties(ofOrder orderID: String, for caller: Caller) async throws(RPCError) -> OrderParties?
}

/// The authorization table and its enforcement.
public struct AccessPolicy: ServerInterceptor {
    private let tokens: TokenCache
    private let parties: (any OrderPartiesLookup)?
    private let logger: Logger
    private let now: @Sendable () -> Double

    /// `parties` answers for the orders this service owns (nil where no rule needs it).
    public init(tokens: TokenCache, parties: (any OrderPartiesLookup)?, logger: Logger,
                now: @escaping @Sendable () -> Double = { Double(time(nil)) }) {
        self.tokens = tokens
        self.parties = parties
        self.logger = logger
        self.now = now
    }

    public func intercept(_ request: (any GRPCMessage)?, context: ServerContext) async throws(RPCError) {
        guard let method = Self.methods[context.path] else {
            if Self.isOpen(context.path) { return }
            throw RPCError(.permissionDenied, "no access rule covers \(context.path)")
        }
        let caller = try authenticate(context.requestMetadata)
        context[CallerKey.self] = caller
        switch method.rule {
        case .anyCaller:
            return
        case .roles(let roles):
            guard roles.contains(caller.role) else { throw denied(caller, context.path) }
        case _ where caller.role == .operator:
            return
        case .owner(let role, let field):
            guard caller.role == role else { throw denied(caller, context.path) }
            guard let owner = request.flatMap(field), owner == caller.subject else {
                throw RPCError(.permissionDenied, "\(caller) may only act as \(role.rawValue) \(caller.subject)")
            }
        case .owners(let fields):
            guard let field = fields[caller.role] else { throw denied(caller, context.path) }
            guard let owner = request.flatMap(field), owner == caller.subject else {
                throw RPCError(.permissionDenied, "\(caller) may only act as \(caller.role.rawValue) \(caller.subject)")
            }
        case .party(let roles, let orderOf):
            guard roles.contains(caller.role) else { throw denied(caller, context.path) }
            // No order id to check (no request, or the table names the wrong type): refuse, so a
            // mistake in the table closes the method instead of opening it.
            guard let orderID = request.flatMap(orderOf) else { throw denied(caller, context.path) }
            // A malformed id is the handler's to refuse (INVALID_ARGUMENT), as without a token.
            guard Identifier.isValid(orderID) else { return }
            guard let found = try await parties?.parties(ofOrder: orderID, for: caller), found.includes(caller) else {
                throw RPCError(.notFound, "order \(orderID) not found")
            }
        }
    }

    public func finished(_ status: RPCError, request: (any GRPCMessage)?, response: @autoclosure () -> (any GRPCMessage)?,
                         context: ServerContext) {
        guard let method = Self.methods[context.path], method.audited else { return }
        let caller = context.caller
        logger.info("audit", metadata: [
            "rpc": "\(context.path)",
            "role": "\(caller?.role.rawValue ?? "none")",
            "sub": "\(caller?.subject ?? "")",
            "order": "\(method.auditedOrder(request, response()) ?? "")",
            "outcome": "\(status.code)",
        ])
    }

    /// The caller of a valid bearer token, or UNAUTHENTICATED saying why not.
    private func authenticate(_ metadata: Metadata) throws(RPCError) -> Caller {
        guard let header = metadata["authorization"] else {
            throw RPCError(.unauthenticated, "no authorization: Bearer token")
        }
        guard Self.isBearer(header) else {
            throw RPCError(.unauthenticated, "the authorization header is not a Bearer token")
        }
        let claims: TokenClaims
        do {
            claims = try tokens.claims(forHeader: header, token: { String(header.dropFirst(7)) }, now: now())
        } catch {
            throw RPCError(.unauthenticated, "invalid token: \(error)")
        }
        guard let role = Role(rawValue: claims.role) else {
            throw RPCError(.unauthenticated, "invalid token: unknown role \(claims.role)")
        }
        return Caller(subject: claims.subject, role: role)
    }

    private func denied(_ caller: Caller, _ path: String) -> RPCError {
        RPCError(.permissionDenied, "a \(caller.role.rawValue) may not call \(path)")
    }

    /// `Bearer ` in any case, then something: checked on the bytes, allocating nothing.
    static func isBearer(_ header: String) -> Bool {
        var bytes = header.utf8.makeIterator()
        for expected in "bearer ".utf8 {
            guard let byte = bytes.next(), byte | (expected == UInt8(ascii: " ") ? 0 : 0x20) == expected else { return false }
        }
        return bytes.next() != nil
    }

    /// Health and reflection answer anyone.
    static func isOpen(_ path: String) -> Bool {
        path.hasPrefix("/grpc.health.v1.Health/") || path.hasPrefix("/grpc.reflection.")
    }
}

extension OrderParties {
    func includes(_ caller: Caller) -> Bool {
        switch caller.role {
        case .customer: customer == caller.subject
        case .restaurant: restaurant == caller.subject
        case .driver: driver == caller.subject
        case .operator: true
        case .service: false
        }
    }
}

/// One method's rule, and whether (and for which order) its calls are audited.
struct MethodAccess: Sendable {
    enum Rule: Sendable {
        /// Any authenticated caller.
        case anyCaller
        /// Callers of these roles only (operators too only when listed).
        case roles(Set<Role>)
        /// A caller of `role` whose subject is the request's field (and operators).
        case owner(Role, @Sendable (any GRPCMessage) -> String?)
        /// A caller of one of the roles whose subject is that role's field (and operators).
        case owners([Role: @Sendable (any GRPCMessage) -> String?])
        /// A caller of one of `roles` who is that party of the request's order (and operators).
        case party(Set<Role>, @Sendable (any GRPCMessage) -> String?)
    }

    let rule: Rule
    /// State changes are audited.
    let audited: Bool
    /// The order an audit line names: from the request, else from the response.
    let auditedOrder: @Sendable ((any GRPCMessage)?, (any GRPCMessage)?) -> String?
}

/// A field of a request type, for the table (a closure, not a key path: this runs on every call).
private func field<Message: GRPCMessage>(_ read: @escaping @Sendable (Message) -> String) -> @Sendable (any GRPCMessage) -> String? {
    { ($0 as? Message).map(read) }
}

extension AccessPolicy {
    /// The table (README.md "Who may call what" shows it).
    static let methods: [String: MethodAccess] = {
        typealias O = OrderServiceMethods
        typealias R = RestaurantServiceMethods
        typealias D = DeliveryServiceMethods
        func read(_ rule: MethodAccess.Rule) -> MethodAccess {
            MethodAccess(rule: rule, audited: false) { _, _ in nil }
        }
        func change(_ rule: MethodAccess.Rule, order: @escaping @Sendable ((any GRPCMessage)?, (any GRPCMessage)?) -> String?) -> MethodAccess {
            MethodAccess(rule: rule, audited: true, auditedOrder: order)
        }
        func requestOrder<Message: GRPCMessage>(_ read: @escaping @Sendable (Message) -> String) -> @Sendable ((any GRPCMessage)?, (any GRPCMessage)?) -> String? {
            let orderOf = field(read)
            return { request, _ in request.flatMap(orderOf) }
        }
        let orderParties: Set<Role> = [.customer, .restaurant, .driver]
        return [
            O.placeOrder.path: change(.owner(.customer, field { (r: PlaceOrderRequest) in r.customerId })) { _, response in
                (response as? PlaceOrderResponse)?.orderId
            },
            O.getOrderStatus.path: read(.party(orderParties, field { (r: GetOrderStatusRequest) in r.orderId })),
            O.listOrders.path: read(.owners([.customer: field { (r: ListOrdersRequest) in r.customerId },
                                              .restaurant: field { (r: ListOrdersRequest) in r.restaurantId }])),
            O.watchOrder.path: read(.party(orderParties, field { (r: WatchOrderRequest) in r.orderId })),
            O.cancelOrder.path: change(.party([.customer, .restaurant], field { (r: CancelOrderRequest) in r.orderId }),
                                       order: requestOrder { (r: CancelOrderRequest) in r.orderId }),
            O.recordRestaurantDecision.path: change(.roles([.service]), order: requestOrder { (r: RecordRestaurantDecisionRequest) in r.orderId }),
            O.recordOrderReady.path: change(.roles([.service]), order: requestOrder { (r: RecordOrderReadyRequest) in r.orderId }),
            R.updateMenu.path: change(.owner(.restaurant, field { (r: UpdateMenuRequest) in r.restaurantId })) { _, _ in nil },
            R.getMenu.path: read(.anyCaller),
            R.setRestaurantStatus.path: change(.owner(.restaurant, field { (r: SetRestaurantStatusRequest) in r.restaurantId })) { _, _ in nil },
            R.markOrderReady.path: change(.owner(.restaurant, field { (r: MarkOrderReadyRequest) in r.restaurantId }),
                                          order: requestOrder { (r: MarkOrderReadyRequest) in r.orderId }),
            R.acceptOrder.path: change(.owner(.restaurant, field { (r: AcceptOrderRequest) in r.restaurantId }),
                                       order: requestOrder { (r: AcceptOrderRequest) in r.orderId }),
            R.rejectOrder.path: change(.owner(.restaurant, field { (r: RejectOrderRequest) in r.restaurantId }),
                                       order: requestOrder { (r: RejectOrderRequest) in r.orderId }),
            R.watchRestaurantOrders.path: read(.owner(.restaurant, field { (r: WatchRestaurantOrdersRequest) in r.restaurantId })),
            D.assignDriver.path: change(.roles([.operator]), order: requestOrder { (r: AssignDriverRequest) in r.orderId }),
            D.updateDeliveryStatus.path: change(.party([.driver], field { (r: UpdateDeliveryStatusRequest) in r.orderId }),
                                                order: requestOrder { (r: UpdateDeliveryStatusRequest) in r.orderId }),
            D.setDriverAvailability.path: change(.owner(.driver, field { (r: SetDriverAvailabilityRequest) in r.driverId })) { _, _ in nil },
            D.getDriverAssignments.path: read(.owner(.driver, field { (r: GetDriverAssignmentsRequest) in r.driverId })),
            D.watchDriverAssignments.path: read(.owner(.driver, field { (r: WatchDriverAssignmentsRequest) in r.driverId })),
        ]
    }()
}
