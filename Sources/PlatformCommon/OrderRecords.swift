// The order's status vocabulary and where an order lives in Redis. The order service owns these
// keys; the delivery service only reads an order's status (to say NOT_FOUND or FAILED_PRECONDITION
// precisely), which is why the names are shared here instead of spelled twice.

/// Every status an order goes through.
public enum OrderStatus: String, Sendable, CaseIterable {
    case placed = "PLACED"
    case accepted = "ACCEPTED"
    case rejected = "REJECTED"
    case canceled = "CANCELED"
    case assigned = "ASSIGNED"
    case pickedUp = "PICKED_UP"
    case outForDelivery = "OUT_FOR_DELIVERY"
    case delivered = "DELIVERED"
    case deliveryFailed = "DELIVERY_FAILED"
}

extension OrderStatus {
    /// No event changes a final order.
    public var isFinal: Bool { self == .delivered || self == .rejected || self == .canceled }

    /// The statuses in which delivery events move the order.
    public var isInDelivery: Bool {
        switch self {
        case .accepted, .assigned, .pickedUp, .outForDelivery, .deliveryFailed: true
        default: false
        }
    }

    /// The status an event moves an order in this status to, or nil when the event does not
    /// change it. The order service's projection (its Lua scripts) follows the same rules, so a
    /// watcher that applies the stream to a snapshot arrives where GetOrderStatus does.
    public func after(_ event: PlatformEvent) -> OrderStatus? {
        switch event.kind {
        case .orderPlaced: nil
        case .orderAccepted, .orderRejected, .orderCanceled: self == .placed ? event.announcedStatus : nil
        case .driverAssigned, .deliveryStatus: isInDelivery ? event.announcedStatus : nil
        }
    }
}

extension PlatformEvent {
    /// The order status this event announces, as GetOrderStatus reports it (a restaurant's
    /// watch shows it; delivery keeps the order service's announcements).
    public var announcedStatus: OrderStatus? {
        switch kind {
        case .orderPlaced: .placed
        case .orderAccepted: .accepted
        case .orderRejected: .rejected
        case .orderCanceled: .canceled
        case .driverAssigned: .assigned
        case .deliveryStatus: detail.flatMap(DeliveryStatus.init(rawValue:))?.orderStatus
        }
    }
}

/// The stages a delivery reports through UpdateDeliveryStatus.
public enum DeliveryStatus: String, Sendable, CaseIterable {
    case assigned = "ASSIGNED"
    case pickedUp = "PICKED_UP"
    case outForDelivery = "OUT_FOR_DELIVERY"
    case delivered = "DELIVERED"
    case failed = "FAILED"

    /// The order status that shows this stage.
    public var orderStatus: OrderStatus {
        switch self {
        case .assigned: .assigned
        case .pickedUp: .pickedUp
        case .outForDelivery: .outForDelivery
        case .delivered: .delivered
        case .failed: .deliveryFailed
        }
    }
}

/// Redis key names of orders (used inside Lua as the same literal prefixes).
public enum OrderKeys {
    /// Hash: customer_id, total_price, restaurant_id, status, decision, decided_by, driver_id,
    /// last_event (the id of the last event applied to it: older ones are skipped).
    public static let prefix = "order:"
    /// List of the order's items, at `order:<id>:items`.
    public static let itemsSuffix = ":items"
    /// Counter behind `order_<n>`. Outside the `order:<id>` names on purpose: "seq" is a valid
    /// order id a client may ask for, and must read as an unknown order, not as this counter.
    public static let sequence = "orders:seq"
}
