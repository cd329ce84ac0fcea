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
        case .orderAccepted, .orderRejected: self == .placed ? event.announcedStatus : nil
        // Who may cancel when is checked when it happens (cancel.lua); the event ends any order.
        case .orderCanceled: isFinal ? nil : .canceled
        case .orderReady: nil
        case .driverAssigned, .deliveryStatus: isInDelivery ? event.announcedStatus : nil
        }
    }
}

/// The kitchen's stage of an accepted order.
public enum KitchenStatus: String, Sendable, CaseIterable {
    case preparing = "PREPARING"
    case ready = "READY"
}

/// Who canceled an order. A customer may cancel while PLACED and, once accepted, until the
/// kitchen has the food READY; a restaurant an accepted order before it is picked up; an operator
/// any order not yet final. (cancel.lua holds these rules, checked with the order's state.)
public enum CancelingParty: String, Sendable, CaseIterable {
    case customer = "CUSTOMER"
    case restaurant = "RESTAURANT"
    case `operator` = "OPERATOR"
}

/// An order as its watchers follow it: the seed's single status, the kitchen's stage and the
/// delivery's stage.
public struct OrderProgress: Sendable, Equatable {
    public var status: OrderStatus
    public var kitchen: KitchenStatus?
    /// The last delivery stage shown (DeliveryStatus raw values).
    public var delivery: String?

    public init(status: OrderStatus, kitchen: KitchenStatus? = nil, delivery: String? = nil) {
        self.status = status
        self.kitchen = kitchen
        self.delivery = delivery
    }

    /// Where `event` takes the order, or nil when it does not change it: the rules of the order
    /// service's projection (its Lua functions), so a watcher that applies the stream to a
    /// snapshot arrives where GetOrderStatus does.
    public func after(_ event: PlatformEvent) -> OrderProgress? {
        var next = self
        if event.kind == .orderReady {
            guard kitchen == .preparing, !status.isFinal else { return nil }
            next.kitchen = .ready
            return next
        }
        guard let status = status.after(event) else { return nil }
        next.status = status
        switch event.kind {
        case .orderAccepted: next.kitchen = .preparing
        case .driverAssigned: next.delivery = DeliveryStatus.assigned.rawValue
        case .deliveryStatus: next.delivery = event.detail
        default: break
        }
        return next
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
        case .orderReady: reportedStatus
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
