import EventLoop
import Synchronization
import Testing

@Suite struct EventLoopTests {
    @Test func executeRunsOnTheLoopInOrder() async {
        let loop = EventLoop(name: "test")
        defer { loop.shutdownGracefully() }
        let seen = Mutex<[Int]>([])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            for value in 0..<100 {
                loop.execute {
                    precondition(loop.inEventLoop)
                    seen.withLock { $0.append(value) }
                }
            }
            loop.execute { done.resume() }
        }
        #expect(seen.withLock { $0 } == Array(0..<100))
        #expect(!loop.inEventLoop)
    }

    @Test func timersFireInDeadlineOrderAndCancelledOnesDoNot() async {
        let loop = EventLoop(name: "timers")
        defer { loop.shutdownGracefully() }
        let fired = Mutex<[String]>([])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            loop.execute {
                loop.schedule(after: .milliseconds(30)) { fired.withLock { $0.append("late") }; done.resume() }
                let cancelled = loop.schedule(after: .milliseconds(10)) { fired.withLock { $0.append("cancelled") } }
                loop.schedule(after: .milliseconds(5)) { fired.withLock { $0.append("early") } }
                loop.cancel(cancelled)
            }
        }
        #expect(fired.withLock { $0 } == ["early", "late"])
    }

    @Test func listenOnAFreePortAndConnect() throws {
        let (listener, port) = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { Socket.close(listener) }
        #expect(port > 0)
        let client = try Socket.connect(host: "127.0.0.1", port: port)
        defer { Socket.close(client) }
        var accepted: Int32?
        for _ in 0..<100 where accepted == nil {
            if case .connection(let fd) = Socket.accept(listener) { accepted = fd }
            if accepted == nil { usleepMilliseconds(5) }
        }
        #expect(accepted != nil)
        if let accepted { Socket.close(accepted) }
    }

    @Test func listeningOnABusyPortIsAnError() throws {
        let (listener, port) = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { Socket.close(listener) }
        #expect(throws: SocketError.self) { try Socket.listen(host: "127.0.0.1", port: port) }
    }
}

#if canImport(Glibc)
import Glibc
func usleepMilliseconds(_ ms: UInt32) { usleep(ms * 1000) }
#endif
