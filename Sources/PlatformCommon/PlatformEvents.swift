// The platform's event contract, in one place: the Pub/Sub channel, the Redis Stream that makes
// the events durable, the text form `TYPE:<order_id>[:detail]` the seed's subscribers read, and
// the typed fields every stream entry carries beside that text.
//
// Pub/Sub alone loses what is published while a subscriber is down, so every event is appended
// to the stream in the same atomic step (a Lua script) as the state change it announces, and then
// published. Subscribers treat a Pub/Sub message as a doorbell and read the stream from their own
// saved position (see EventConsumer), so nothing is missed and nothing is applied out of order.
// Watchers (WatchOrder and friends) read the stream too, through one blocking reader per process
// (EventHub), and route each entry by its fields: the order, its restaurant, its driver.
//
// A stream entry is `event <text>` followed by field/value pairs named by `PlatformEvent.Field`.
// The entry's id is the event's identity and its time (the id's first part is the Redis server's
// clock in milliseconds). ORDER_PLACED goes to the stream only: the channel keeps exactly the
// seed's messages.

/// Names and formats every service shares.
public enum PlatformEvents {
    /// The Pub/Sub channel of all order events.
    public static let channel = "order_events"
    /// The Redis Stream holding every event published on `channel`, in order.
    public static let stream = "order_events:stream"
    /// The stream is capped (approximately) at this many entries: far more than any consumer's lag.
    public static let streamMaxLength = 1_000_000
}

/// One event: the seed's `TYPE:<order_id>[:detail]` and the typed details of its stream entry.
public struct PlatformEvent: Sendable, Equatable, CustomStringConvertible {
    /// What happened.
    public enum Kind: String, Sendable, CaseIterable {
        /// A customer placed the order (stream only; carries customer, restaurant, items, total).
        case orderPlaced = "ORDER_PLACED"
        /// A restaurant accepted the order (the delivery service assigns a driver).
        case orderAccepted = "ORDER_ACCEPTED"
        case orderRejected = "ORDER_REJECTED"
        case orderCanceled = "ORDER_CANCELED"
        /// A driver was assigned to the order; detail: the driver id.
        case driverAssigned = "DRIVER_ASSIGNED"
        /// The delivery reached a stage; detail: PICKED_UP, OUT_FOR_DELIVERY, DELIVERED, FAILED, ...
        case deliveryStatus = "DELIVERY_STATUS"

        /// Written by the order service (the others are the delivery service's).
        public var isOrderServiceEvent: Bool {
            switch self {
            case .orderPlaced, .orderAccepted, .orderRejected, .orderCanceled: true
            case .driverAssigned, .deliveryStatus: false
            }
        }
    }

    /// The fields of a stream entry besides `event` (the text).
    public enum Field: String, Sendable, CaseIterable {
        case text = "event"
        case restaurant
        case customer
        case driver
        /// On DRIVER_ASSIGNED: the driver whose open assignment of the order was replaced.
        case previousDriver = "previous_driver"
        case previousAssignment = "previous_assignment"
        case assignment
        /// On ORDER_PLACED: the items, each as `<byte length>:<bytes>`, concatenated.
        case items
        /// On ORDER_PLACED: the total price, as the order stores it.
        case total
    }

    public var kind: Kind
    public var orderID: String
    public var detail: String?
    /// The stream entry's id (`<ms>-<seq>`), when the event was read from the stream.
    public var id: StreamID?
    public var restaurantID: String?
    public var customerID: String?
    public var driverID: String?
    public var previousDriverID: String?
    public var previousAssignmentID: String?
    public var assignmentID: String?
    public var items: [String]?
    public var totalPrice: Double?

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

    /// Reads a stream entry: its id and its flat field/value list. Nil for an entry that is not
    /// a platform event.
    public init?(entryID: String, fields: [String?]) {
        var values: [Field: String] = [:]
        var index = 0
        while index + 1 < fields.count {
            if let name = fields[index].flatMap(Field.init(rawValue:)), let value = fields[index + 1] { values[name] = value }
            index += 2
        }
        guard let text = values[.text], let parsed = PlatformEvent(text: text) else { return nil }
        self = parsed
        id = StreamID(entryID)
        restaurantID = values[.restaurant].flatMap { $0.isEmpty ? nil : $0 }
        customerID = values[.customer].flatMap { $0.isEmpty ? nil : $0 }
        driverID = values[.driver].flatMap { $0.isEmpty ? nil : $0 } ?? (kind == .driverAssigned ? detail : nil)
        previousDriverID = values[.previousDriver].flatMap { $0.isEmpty ? nil : $0 }
        previousAssignmentID = values[.previousAssignment].flatMap { $0.isEmpty ? nil : $0 }
        assignmentID = values[.assignment].flatMap { $0.isEmpty ? nil : $0 }
        items = values[.items].map(Self.decodeItems)
        totalPrice = values[.total].flatMap(Double.init)
    }

    public var description: String {
        detail.map { "\(kind.rawValue):\(orderID):\($0)" } ?? "\(kind.rawValue):\(orderID)"
    }

    /// Splits `<length>:<bytes>` runs (Lua writes them with `encodeItemsLua`).
    static func decodeItems(_ text: String) -> [String] {
        var items: [String] = []
        var bytes = Substring(text).utf8[...]
        while let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
              let length = Int(String(decoding: bytes[..<colon], as: UTF8.self)) {
            let start = bytes.index(after: colon)
            guard let end = bytes.index(start, offsetBy: length, limitedBy: bytes.endIndex) else { break }
            items.append(String(decoding: bytes[start..<end], as: UTF8.self))
            bytes = bytes[end...]
        }
        return items
    }
}

/// A stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders them.
public struct StreamID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let milliseconds: UInt64
    public let sequence: UInt64

    public init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let milliseconds = UInt64(parts[0]), let sequence = UInt64(parts[1]) else { return nil }
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    public static let zero = StreamID("0-0")!

    public static func < (lhs: StreamID, rhs: StreamID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }
}

/// Lua for the scripts that change state, so the change, the durable event and the notification
/// are one atomic step:
/// - `emit(text, fields, quiet)` appends the entry (`fields`: a flat field/value list named by
///   `PlatformEvent.Field`), publishes `text` unless `quiet`, and returns the entry's id;
/// - `older(a, b)` tells whether stream id `a` comes before `b`;
/// - `encodeItems(list)` writes items as `PlatformEvent` reads them.
public let eventLua = """
    local function emit(text, fields, quiet)
        local id = redis.call('XADD', '\(PlatformEvents.stream)', 'MAXLEN', '~', '\(PlatformEvents.streamMaxLength)', '*', '\(PlatformEvent.Field.text.rawValue)', text, unpack(fields))
        if not quiet then redis.call('PUBLISH', '\(PlatformEvents.channel)', text) end
        return id
    end
    local function older(a, b)
        local am, as = string.match(a, '(%d+)-(%d+)')
        local bm, bs = string.match(b, '(%d+)-(%d+)')
        am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
        return am < bm or (am == bm and as < bs)
    end
    local function encodeItems(list)
        local parts = {}
        for i, item in ipairs(list) do parts[i] = #item .. ':' .. item end
        return table.concat(parts)
    end
    """
