// The platform's event contract, in one place: the Pub/Sub channel, the Redis Streams that make
// the events durable, the text form `TYPE:<order_id>[:detail]` the seed's subscribers read, and
// the typed fields every stream entry carries beside that text.
//
// Pub/Sub alone loses what is published while a subscriber is down, so every event is appended
// to a stream in the same atomic step (a Lua function) as the state change it announces, and then
// published. The services read the streams, not the channel (see EventConsumer); watchers
// (WatchOrder and friends) read them too, through one blocking reader per stream per process
// (EventHub), and route each entry by its fields: the order, its restaurant, its driver.
//
// The orders are split into `OrderPartition.count` partitions by a hash of the order id. A
// partition's hash tag (`{orders.<n>}`) is in the names of its orders' keys, the order service's
// and the delivery service's alike, and of its stream, so every function that changes an order and
// appends its event stays on one Redis Cluster slot, and the partitions spread over the nodes.
// All the events of one order are in its partition's stream, in order.
//
// A stream entry is a field map named by `PlatformEvent.Field`: `event` (the seed's text), `type`,
// `order` and `detail`, then the typed details (customer, restaurant, driver, ...).
// The entry's id is the event's identity and its time (the id's first part is the Redis server's
// clock in milliseconds); ids compare within one stream only. ORDER_PLACED goes to the stream
// only: the channel keeps exactly the seed's messages. An event written while serving a call
// carries the call's W3C `traceparent`, so the work it causes elsewhere (the delivery service's
// automatic assignment of an accepted order) continues the same trace.
import RedisClient
import TraceContext
#if canImport(Glibc)
import Glibc
#endif

/// Names and formats every service shares.
public enum PlatformEvents {
    /// The Pub/Sub channel of all order events.
    public static let channel = "order_events"
    /// Each partition's stream is capped (approximately) at this many entries: about 1,000,000
    /// events in all, far more than any consumer's lag.
    public static let streamMaxLength = 1_000_000 / OrderPartition.count
    /// What a function answers when a consumer group has more entries unacknowledged than it looks
    /// through: the caller has the consumer catch up, then asks again (`BEHIND` in the Lua).
    public static let behind = "BEHIND"
}

/// One slice of the orders: the hash tag its orders' keys and its event stream share.
public struct OrderPartition: Sendable, Hashable, CustomStringConvertible {
    /// Fixed: changing it moves orders to other partitions (and other keys).
    public static let count = 8
    public static let all = (0..<count).map(OrderPartition.init(index:))

    public let index: Int

    private init(index: Int) { self.index = index }

    /// The partition of an order, from its id (CRC16 of the id, as Redis Cluster hashes keys).
    public init(order id: String) {
        self.init(index: Int(RedisHashSlot.crc16(id.utf8)) % Self.count)
    }

    /// `{orders.<n>}`: in every key of the partition's orders.
    public var tag: String { "{orders.\(index)}" }
    /// The partition's event stream.
    public var stream: String { "events:\(tag)" }
    /// Events a consumer group could not apply (id, group, event, error), set aside for an operator.
    public var deadLetters: String { "events:dead:\(tag)" }
    public var description: String { tag }
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
        /// The order was canceled (by its customer, its restaurant or an operator; carries who and
        /// why); its open assignment ends.
        case orderCanceled = "ORDER_CANCELED"
        /// The kitchen has the food ready for pickup (carries the order's status at the time).
        case orderReady = "ORDER_READY"
        /// A driver was assigned to the order; detail: the driver id.
        case driverAssigned = "DRIVER_ASSIGNED"
        /// The delivery reached a stage; detail: PICKED_UP, OUT_FOR_DELIVERY, DELIVERED, FAILED, ...
        case deliveryStatus = "DELIVERY_STATUS"

        /// Written by the order service (the others are the delivery service's).
        public var isOrderServiceEvent: Bool {
            switch self {
            case .orderPlaced, .orderAccepted, .orderRejected, .orderCanceled, .orderReady: true
            case .driverAssigned, .deliveryStatus: false
            }
        }
    }

    /// The fields of a stream entry.
    public enum Field: String, Sendable, CaseIterable {
        /// The seed's text, `TYPE:<order_id>[:detail]`, as published on the channel.
        case text = "event"
        /// The event's kind, order and detail (what the text says, as fields of their own).
        case kind = "type"
        case order
        /// DRIVER_ASSIGNED: the driver; DELIVERY_STATUS: the stage; empty for the others.
        case detail
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
        /// On ORDER_ACCEPTED with the kitchen's estimate: when the food should be ready (ms since
        /// the Unix epoch).
        case readyAt = "ready_at"
        /// On ORDER_REJECTED: the RejectionReason.
        case reason
        /// On ORDER_READY: the order's status when the kitchen marked it.
        case status
        /// On ORDER_CANCELED: the CancelingParty, and its words.
        case canceledBy = "canceled_by"
        case cancelReason = "cancel_reason"
        /// The W3C trace context of the call that wrote the event (on ORDER_ACCEPTED and
        /// ORDER_REJECTED), when it had one.
        case trace = "traceparent"
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
    public var readyAtUnixMs: Int64?
    public var rejectionReason: RejectionReason?
    /// ORDER_READY: the order's status at the time.
    public var reportedStatus: OrderStatus?
    public var canceledBy: CancelingParty?
    public var cancelReason: String?
    /// The trace of the call that wrote it.
    public var trace: TraceContext?

    public init(_ kind: Kind, orderID: String, detail: String? = nil) {
        self.kind = kind
        self.orderID = orderID
        self.detail = detail
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
        guard let kind = values[.kind].flatMap(Kind.init(rawValue:)), let order = values[.order], !order.isEmpty else { return nil }
        self.init(kind, orderID: order, detail: values[.detail].flatMap { $0.isEmpty ? nil : $0 })
        id = StreamID(entryID)
        restaurantID = values[.restaurant].flatMap { $0.isEmpty ? nil : $0 }
        customerID = values[.customer].flatMap { $0.isEmpty ? nil : $0 }
        driverID = values[.driver].flatMap { $0.isEmpty ? nil : $0 } ?? (kind == .driverAssigned ? detail : nil)
        previousDriverID = values[.previousDriver].flatMap { $0.isEmpty ? nil : $0 }
        previousAssignmentID = values[.previousAssignment].flatMap { $0.isEmpty ? nil : $0 }
        assignmentID = values[.assignment].flatMap { $0.isEmpty ? nil : $0 }
        items = values[.items].map(Self.decodeItems)
        totalPrice = values[.total].flatMap(Double.init)
        readyAtUnixMs = values[.readyAt].flatMap { Int64($0) }
        rejectionReason = values[.reason].flatMap(RejectionReason.init(rawValue:))
        reportedStatus = values[.status].flatMap(OrderStatus.init(rawValue:))
        canceledBy = values[.canceledBy].flatMap(CancelingParty.init(rawValue:))
        cancelReason = values[.cancelReason].flatMap { $0.isEmpty ? nil : $0 }
        trace = values[.trace].flatMap { TraceContext(traceparent: $0) }
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

/// The wall clock in milliseconds since the Unix epoch: the unit of the API's `*_unix_ms` fields
/// and of stream ids' first part.
public func unixMilliseconds() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
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

/// The Lua prelude of every library (LuaLibrary): the domain's names as Lua tables, built from their Swift
/// definitions so that no status, kind or field is spelled twice:
/// - `Status.<RAW>` (OrderStatus), `Stage.<RAW>` (DeliveryStatus), `Kind.<RAW>` (event kinds),
///   `Kitchen.<RAW>` (KitchenStatus), `Party.<RAW>` (CancelingParty), `Field.<swiftName>` (stream
///   fields, e.g. `Field.previousDriver`);
/// - `stageStatus[stage]`: the order status that shows a delivery stage; `inDelivery[status]`:
///   the statuses delivery events move; `stageShown[status]`: the statuses that show a delivery
///   stage; `finalStatus[status]`: the final statuses;
/// - `channel`, `streamMaxLength` and `BEHIND`.
public let domainLua: String = {
    func table(_ name: String, _ pairs: [(String, String)]) -> String {
        "local \(name) = {" + pairs.map { "\($0.0) = \($0.1)" }.joined(separator: ", ") + "}"
    }
    func quoted(_ text: String) -> String { "'\(text)'" }
    return [
        table("Status", OrderStatus.allCases.map { ($0.rawValue, quoted($0.rawValue)) }),
        table("Stage", DeliveryStatus.allCases.map { ($0.rawValue, quoted($0.rawValue)) }),
        table("Kind", PlatformEvent.Kind.allCases.map { ($0.rawValue, quoted($0.rawValue)) }),
        table("Kitchen", KitchenStatus.allCases.map { ($0.rawValue, quoted($0.rawValue)) }),
        table("Party", CancelingParty.allCases.map { ($0.rawValue, quoted($0.rawValue)) }),
        table("Field", PlatformEvent.Field.allCases.map { (String(describing: $0), quoted($0.rawValue)) }),
        table("stageStatus", DeliveryStatus.allCases.map { ($0.rawValue, quoted($0.orderStatus.rawValue)) }),
        table("inDelivery", OrderStatus.allCases.filter(\.isInDelivery).map { ($0.rawValue, "true") }),
        table("stageShown", DeliveryStatus.allCases.map { ($0.orderStatus.rawValue, "true") }),
        table("finalStatus", OrderStatus.allCases.filter(\.isFinal).map { ($0.rawValue, "true") }),
        "local channel = \(quoted(PlatformEvents.channel))",
        "local streamMaxLength = \(quoted(String(PlatformEvents.streamMaxLength)))",
        "local BEHIND = \(quoted(PlatformEvents.behind))",
    ].joined(separator: "\n")
}()
