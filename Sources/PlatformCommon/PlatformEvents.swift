// The platform's event contract, in one place: the Pub/Sub channel, the Redis Stream that makes
// the events durable, and the text form `TYPE:<order_id>[:detail]` every service reads and writes.
//
// Pub/Sub alone loses what is published while a subscriber is down, so every event is appended
// to the stream in the same atomic step (a Lua script) as the state change it announces, and then
// published. Subscribers treat a Pub/Sub message as a doorbell and read the stream from their own
// saved position (see EventConsumer), so nothing is missed and nothing is applied out of order.

/// Names and formats every service shares.
public enum PlatformEvents {
    /// The Pub/Sub channel of all order events.
    public static let channel = "order_events"
    /// The Redis Stream holding every event published on `channel`, in order.
    public static let stream = "order_events:stream"
    /// The stream is capped (approximately) at this many entries: far more than any consumer's lag.
    public static let streamMaxLength = 1_000_000
}

/// One event, as `TYPE:<order_id>[:detail]`.
public struct PlatformEvent: Sendable, Equatable, CustomStringConvertible {
    /// What happened.
    public enum Kind: String, Sendable, CaseIterable {
        /// A restaurant accepted the order (the delivery service assigns a driver).
        case orderAccepted = "ORDER_ACCEPTED"
        case orderRejected = "ORDER_REJECTED"
        case orderCanceled = "ORDER_CANCELED"
        /// A driver was assigned to the order; detail: the driver id.
        case driverAssigned = "DRIVER_ASSIGNED"
        /// The delivery reached a stage; detail: PICKED_UP, OUT_FOR_DELIVERY, DELIVERED, FAILED, ...
        case deliveryStatus = "DELIVERY_STATUS"
    }

    public var kind: Kind
    public var orderID: String
    public var detail: String?

    public init(_ kind: Kind, orderID: String, detail: String? = nil) {
        self.kind = kind
        self.orderID = orderID
        self.detail = detail
    }

    /// Parses `TYPE:<order_id>[:detail]`; nil for anything else (unknown types are skipped).
    public init?(text: String) {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, let kind = Kind(rawValue: String(parts[0])), !parts[1].isEmpty else { return nil }
        self.init(kind, orderID: String(parts[1]), detail: parts.count == 3 ? String(parts[2]) : nil)
    }

    public var description: String {
        detail.map { "\(kind.rawValue):\(orderID):\($0)" } ?? "\(kind.rawValue):\(orderID)"
    }
}
