// The order's status vocabulary, shared by every service and by the Lua prelude (domainLua): the
// statuses an order goes through, the stages a delivery reports, and how events move an order.

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

/// Why a restaurant turned an order down (RejectOrder's reason, as orders and events keep it).
public enum RejectionReason: String, Sendable, CaseIterable {
    case outOfStock = "OUT_OF_STOCK"
    case tooBusy = "TOO_BUSY"
    case closed = "CLOSED"
    case other = "OTHER"
}

/// The kitchen's estimate when accepting: at most this many minutes.
public let maxPrepMinutes: Int32 = 240

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
