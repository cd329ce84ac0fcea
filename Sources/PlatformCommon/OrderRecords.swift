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
    /// Hash: customer_id, total_price, restaurant_id, status, decision, decided_by.
    public static let prefix = "order:"
    /// List of the order's items, at `order:<id>:items`.
    public static let itemsSuffix = ":items"
    /// Counter behind `order_<n>`. Outside the `order:<id>` names on purpose: "seq" is a valid
    /// order id a client may ask for, and must read as an unknown order, not as this counter.
    public static let sequence = "orders:seq"
}
