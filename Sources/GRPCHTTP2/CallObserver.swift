// What the server tells an observer (metrics) about its calls: each call's start, its messages
// and its end with a status and a duration.
//
// The observer makes one recorder per event loop when the server starts, and each loop's
// connections tell only their own loop's recorder, from that loop's thread. A recorder can
// therefore count in plain memory: no lock, no atomic, and no allocation for a unary call (a
// streaming call's transport makes one small closure that tells of its sent messages). Methods
// are the router's numbers (`Route.methodIndex`), so a recorder counts into array slots. How the
// counts leave the loop (an exporter hopping onto it when scraped) is the observer's business:
// the transport knows nothing of metrics.
import EventLoop
import RPCCore

/// Watches every call of a server; given to `GRPCServer(observer:)`.
public protocol ServerCallObserver: Sendable {
    /// The recorder for the calls of `loop`'s connections, which call it on that loop only.
    /// `methods` are the server's routes, in `methodIndex` order.
    func makeRecorder(methods: [Route], loop: EventLoop) -> any ServerCallRecorder
}

/// One loop's share of a server's calls. Called on its loop's thread only.
public protocol ServerCallRecorder: AnyObject {
    /// A call of a served method began (its headers are in).
    func started(method: Int)
    /// A request message arrived for a call of `method`.
    func received(method: Int)
    /// A response message of a call of `method` went out.
    func sent(method: Int)
    /// A started call ended with `code` after `duration` (from its headers to its status).
    func finished(method: Int, code: StatusCode, duration: Duration)
}
