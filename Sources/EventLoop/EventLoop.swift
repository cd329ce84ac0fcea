// One thread, one epoll instance: the only place in the platform that waits for I/O.
//
// Design: every socket (gRPC connections, listeners, the Redis connections) belongs to exactly one
// loop and is touched only on that loop's thread, so the objects that own them need no locks.
// Other threads talk to a loop by `execute`, which appends a closure to a locked queue and wakes
// the loop through an eventfd (only when the queue was empty, so a burst costs one wake-up).
// Timers live in a min-heap and bound epoll_wait's timeout; a cancelled timer is dropped from a
// table and its heap entry ignored when it surfaces, so cancelling is O(1). Work registered with
// `runBeforeWaiting` runs at the end of each round, which is where connections write.
import CSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Receives readiness events for a file descriptor registered with a loop. Called on the loop.
public protocol IOHandler: AnyObject {
    func handleIO(_ events: IOEvents)
}

/// Readiness interest and results, as epoll flags.
public struct IOEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let read = IOEvents(rawValue: EPOLLIN.rawValue)
    public static let write = IOEvents(rawValue: EPOLLOUT.rawValue)
    /// Peer closed or error: reported whether asked for or not.
    public static let hangup = IOEvents(rawValue: EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLRDHUP.rawValue)
}

/// Identifies a scheduled timer so it can be cancelled.
public struct TimerID: Hashable, Sendable {
    fileprivate let value: UInt64
}

/// An epoll event loop running on its own thread.
public final class EventLoop: @unchecked Sendable {
    // Shared with other threads: guarded by the mutex.
    private let pending = Mutex<(work: [@Sendable () -> Void], stopping: Bool)>(([], false))
    // Loop-thread state: only touched on the loop thread (the invariant that makes this
    // class safe to share although it holds non-Sendable state).
    private var handlers: [Int32: any IOHandler] = [:]
    private var timers: [UInt64: () -> Void] = [:]
    private var beforeWaiting: [() -> Void] = []
    private var timerHeap = TimerHeap()
    private var nextTimerID: UInt64 = 0
    private let epollFD: Int32
    private let wakeFD: Int32
    private var thread: pthread_t?
    private let threadID = Atomic<UInt>(0)
    public let name: String

    /// Creates the loop and starts its thread.
    public init(name: String) {
        self.name = name
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(epollFD >= 0 && wakeFD >= 0, "epoll/eventfd failed: errno \(errno)")
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(fd: wakeFD))
        epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
        let box = Unmanaged.passRetained(self).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            let loop = Unmanaged<EventLoop>.fromOpaque(context!).takeRetainedValue()
            loop.run()
            return nil
        }, box)
        precondition(result == 0, "pthread_create failed: \(result)")
        thread = handle
    }

    deinit {
        // The epoll instance went with the thread (end of `run`); the eventfd stays until now,
        // because `execute` may still be called (and wake) after shutdown.
        close(wakeFD)
    }

    /// True on this loop's thread.
    public var inEventLoop: Bool { threadID.load(ordering: .relaxed) == UInt(bitPattern: Int(bitPattern: pthread_self())) }

    /// Runs `work` on the loop thread, soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let wasEmpty = pending.withLock { state in
            state.work.append(work)
            return state.work.count == 1
        }
        if wasEmpty { wake() }
    }

    /// Stops the loop after the work queued so far, and waits for its thread (not from the loop).
    public func shutdownGracefully() {
        precondition(!inEventLoop, "shutdownGracefully must not be called on the loop itself")
        pending.withLock { $0.stopping = true }
        wake()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    // MARK: - Loop-thread API

    /// Watches `fd` for `events`; the loop keeps `handler` alive until `deregister`.
    public func register(_ fd: Int32, for events: IOEvents, handler: any IOHandler) {
        assert(inEventLoop)
        handlers[fd] = handler
        var event = epoll_event(events: events.rawValue | EPOLLRDHUP.rawValue, data: epoll_data_t(fd: fd))
        epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event)
    }

    /// Changes what `fd` is watched for.
    public func modify(_ fd: Int32, for events: IOEvents) {
        assert(inEventLoop)
        var event = epoll_event(events: events.rawValue | EPOLLRDHUP.rawValue, data: epoll_data_t(fd: fd))
        epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event)
    }

    /// Stops watching `fd` and releases its handler. Does not close the descriptor.
    public func deregister(_ fd: Int32) {
        assert(inEventLoop)
        handlers[fd] = nil
        epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
    }

    /// Runs `work` on the loop once `delay` has passed, unless cancelled first.
    @discardableResult
    public func schedule(after delay: Duration, _ work: @escaping () -> Void) -> TimerID {
        assert(inEventLoop)
        nextTimerID += 1
        let id = nextTimerID
        timers[id] = work
        let (deadline, overflow) = monotonicNanoseconds().addingReportingOverflow(delay.nanoseconds)
        timerHeap.push(deadline: overflow ? .max : deadline, id: id)
        // Cancelled timers leave their heap entries behind until they surface; when they
        // outnumber the live ones, rebuild, so a heap of long deadlines cannot grow per request.
        if timerHeap.count > 64 && timerHeap.count > 2 * timers.count {
            timerHeap.removeAll { timers[$0] == nil }
        }
        return TimerID(value: id)
    }

    /// Runs `work` once this round of events, timers and queued work is done, before the loop
    /// waits again: a connection uses it to gather the frames of every call answered in the round
    /// into one write, instead of one system call per call.
    public func runBeforeWaiting(_ work: @escaping () -> Void) {
        assert(inEventLoop)
        beforeWaiting.append(work)
    }

    public func cancel(_ timer: TimerID) {
        assert(inEventLoop)
        timers[timer.value] = nil
    }

    // MARK: - The loop

    private func run() {
        threadID.store(UInt(bitPattern: Int(bitPattern: pthread_self())), ordering: .relaxed)
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        while true {
            let ready = epoll_wait(epollFD, &events, Int32(events.count), nextTimeoutMilliseconds())
            if ready > 0 {
                for index in 0..<Int(ready) {
                    let fd = events[index].data.fd
                    if fd == wakeFD {
                        var value: UInt64 = 0
                        _ = read(wakeFD, &value, 8)
                    } else if let handler = handlers[fd] {
                        handler.handleIO(IOEvents(rawValue: events[index].events))
                    }
                }
            }
            runDueTimers()
            let stopping = runQueuedWork()
            while !beforeWaiting.isEmpty {
                let work = beforeWaiting
                beforeWaiting.removeAll()
                for item in work { item() }
            }
            if stopping { break }
        }
        handlers.removeAll()
        timers.removeAll()
        // Only this thread uses the epoll instance, so it can go now rather than when the last
        // reference to the loop does.
        close(epollFD)
    }

    /// Runs what other threads queued; returns true when the loop should stop.
    private func runQueuedWork() -> Bool {
        let (work, stopping) = pending.withLock { state in
            defer { state.work.removeAll(keepingCapacity: true) }
            return (state.work, state.stopping)
        }
        for item in work { item() }
        return stopping && pending.withLock { $0.work.isEmpty }
    }

    private func runDueTimers() {
        let now = monotonicNanoseconds()
        while let top = timerHeap.top, top.deadline <= now {
            timerHeap.pop()
            if let work = timers.removeValue(forKey: top.id) { work() }
        }
    }

    private func nextTimeoutMilliseconds() -> Int32 {
        if pending.withLock({ !$0.work.isEmpty || $0.stopping }) { return 0 }
        while let top = timerHeap.top, timers[top.id] == nil { timerHeap.pop() }
        guard let top = timerHeap.top else { return -1 }
        let now = monotonicNanoseconds()
        if top.deadline <= now { return 0 }
        return Int32(min((top.deadline - now + 999_999) / 1_000_000, 60_000))
    }
}

/// A value that may only be used on one loop's thread, carried across a `@Sendable` boundary.
/// The check is a debug assertion, as NIO's `NIOLoopBound` does it.
public struct LoopBound<Value>: @unchecked Sendable {
    private let storage: Value
    public let loop: EventLoop

    public init(_ value: Value, loop: EventLoop) {
        self.storage = value
        self.loop = loop
    }

    public var value: Value {
        assert(loop.inEventLoop, "LoopBound value used off its loop")
        return storage
    }
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

extension Duration {
    /// Whole nanoseconds, clamped at zero and at UInt64.max (a deadline of centuries must not trap).
    public var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return .max }
        let (total, carry) = whole.addingReportingOverflow(UInt64(max(0, attoseconds) / 1_000_000_000))
        return carry ? .max : total
    }
}

/// A binary min-heap of (deadline, id).
struct TimerHeap {
    private var items: [(deadline: UInt64, id: UInt64)] = []

    var top: (deadline: UInt64, id: UInt64)? { items.first }
    var count: Int { items.count }

    /// Drops the entries whose id matches, and restores the heap order.
    mutating func removeAll(where shouldRemove: (UInt64) -> Bool) {
        let kept = items.filter { !shouldRemove($0.id) }
        items = []
        for item in kept { push(deadline: item.deadline, id: item.id) }
    }

    mutating func push(deadline: UInt64, id: UInt64) {
        items.append((deadline, id))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].deadline < items[parent].deadline else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() {
        guard !items.isEmpty else { return }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count, items[left].deadline < items[smallest].deadline { smallest = left }
            if right < items.count, items[right].deadline < items[smallest].deadline { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

/// A fixed set of loops, handed out round-robin: one per core by default.
public final class EventLoopGroup: Sendable {
    public let loops: [EventLoop]
    private let next = Atomic<Int>(0)

    public init(loopCount: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))), name: String = "loop") {
        loops = (0..<max(1, loopCount)).map { EventLoop(name: "\(name)-\($0)") }
    }

    public func nextLoop() -> EventLoop {
        loops[next.add(1, ordering: .relaxed).oldValue % loops.count]
    }

    public func shutdownGracefully() {
        for loop in loops { loop.shutdownGracefully() }
    }
}
