// The platform's business figures, named once: what an operator's dashboard shows beside the
// gRPC and Redis metrics. They are swift-metrics counters and gauges, so the logic does not know
// where they go: with metrics on, the service's executable bootstraps swift-metrics onto its
// Prometheus registry before anything counts; in tests, or with METRICS_PORT=0, they go nowhere.
//
// Each is counted by the service that makes the fact true, once per fact (a retried request
// that changes nothing counts nothing): placed and canceled by the order service, accepted and
// rejected where the order service records the restaurant's decision, delivered and automatic
// assignments by the delivery service. Counters are per process: sum them over replicas.
import CoreMetrics

/// The business counters and gauges.
public enum BusinessMetrics {
    public static let ordersPlaced = Counter(label: "platform_orders_placed_total")
    public static let ordersAccepted = Counter(label: "platform_orders_accepted_total")
    public static let ordersRejected = Counter(label: "platform_orders_rejected_total")
    public static let ordersCanceled = Counter(label: "platform_orders_canceled_total")
    public static let ordersDelivered = Counter(label: "platform_orders_delivered_total")
    /// Drivers given to accepted orders by the delivery service itself (not by AssignDriver).
    public static let automaticAssignments = Counter(label: "platform_driver_assignments_total")
    /// Accepted orders waiting for a driver on shift (read from Redis at each scrape).
    public static let ordersWaitingForDriver = Gauge(label: "platform_orders_waiting_for_driver")
}
