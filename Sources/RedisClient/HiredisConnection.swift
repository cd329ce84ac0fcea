// One hiredis async context driven by our epoll loop: the only file that touches hiredis's
// context pointers.
//
// Design: hiredis does the protocol (formatting argv, parsing replies, the FIFO of reply
// callbacks that matches pipelined replies to commands); the loop does the waiting. hiredis asks
// for read/write interest through its `ev` hooks, we translate those into epoll interest and call
// `redisAsyncHandleRead/Write` on readiness.
//
// Lifetime, which is where hiredis 0.14 bites:
// - `ev.data` holds a +1 reference to this object, released in the `ev.cleanup` hook. hiredis
//   calls cleanup from its one free routine on every path (connect failure, connection lost,
//   `redisAsyncFree`), after it has called every pending reply callback with a NULL reply and
//   before it closes the socket. So cleanup is the single "context gone" signal and the pointer
//   is dropped there. A failed connect calls the connect callback and then frees the context
//   without the disconnect callback, which is why no disconnect callback is used at all.
// - All C callbacks are closures written in this nonisolated class, never in actor-isolated
//   code, so no isolation check is inserted into them (a SIGILL when hiredis calls them).
// - Each command's `privdata` is a +1 `PendingCommand`, taken back in its reply callback (which
//   hiredis calls exactly once, with NULL if the connection goes first).
import CHiredis
import EventLoop

/// What a connection reports to its owner, on the loop thread.
protocol HiredisConnectionDelegate: AnyObject {
    func connectionDidConnect(_ connection: HiredisConnection)
    /// A reply (nil: the connection is going away) for `command`, or an unsolicited Pub/Sub
    /// reply when `command` is nil.
    func connection(_ connection: HiredisConnection, received reply: RedisReply?, for command: PendingCommand?)
    /// The context is freed; nothing more will be reported.
    func connectionDidClose(_ connection: HiredisConnection, reason: String)
}

/// A loop-confined owner of one `redisAsyncContext`.
final class HiredisConnection: IOHandler {
    let loop: EventLoop
    private var delegate: (any HiredisConnectionDelegate)?
    private var context: UnsafeMutablePointer<redisAsyncContext>?
    private var fd: Int32 = -1
    private var interest: IOEvents = []
    private var isConnected = false
    /// Why we freed the context ourselves; hiredis's errstr is empty then.
    private var closeReason: String?

    init(loop: EventLoop, delegate: any HiredisConnectionDelegate) {
        self.loop = loop
        self.delegate = delegate
    }

    /// Starts a non-blocking connect; returns the reason if it failed at once (then nothing
    /// more is reported).
    func connect(host: String, port: Int) -> String? {
        guard let ac = redisAsyncConnect(host, Int32(port)) else { return "out of memory" }
        if ac.pointee.err != 0 {
            let reason = String(cString: ac.pointee.errstr)
            redisAsyncFree(ac)
            delegate = nil
            return reason
        }
        context = ac
        fd = ac.pointee.c.fd
        loop.register(fd, for: [], handler: self)
        ac.pointee.ev.data = Unmanaged.passRetained(self).toOpaque()
        ac.pointee.ev.addRead = { HiredisConnection.from($0).setInterest(adding: .read) }
        ac.pointee.ev.delRead = { HiredisConnection.from($0).setInterest(removing: .read) }
        ac.pointee.ev.addWrite = { HiredisConnection.from($0).setInterest(adding: .write) }
        ac.pointee.ev.delWrite = { HiredisConnection.from($0).setInterest(removing: .write) }
        ac.pointee.ev.cleanup = { data in
            Unmanaged<HiredisConnection>.fromOpaque(data!).takeRetainedValue().contextFreed()
        }
        // This also asks for a write event (through addWrite): 0.14 notices a finished connect
        // only on one.
        redisAsyncSetConnectCallback(ac) { ac, status in
            let connection = HiredisConnection.from(ac!.pointee.ev.data)
            if status == REDIS_OK {
                connection.isConnected = true
                connection.delegate?.connectionDidConnect(connection)
            } else {
                // hiredis frees the context right after this returns; cleanup reports it.
                connection.closeReason = String(cString: ac!.pointee.errstr)
            }
        }
        return nil
    }

    /// Queues one command (argv form, binary-safe). `command` gets the reply; nil means the
    /// replies arrive unsolicited (SUBSCRIBE). False if the context no longer takes commands.
    func send(_ arguments: [[UInt8]], for command: PendingCommand?) -> Bool {
        guard let ac = context else { return false }
        let privdata = command.map { Unmanaged.passRetained($0).toOpaque() }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(arguments.reduce(1) { $0 + $1.count })
        for argument in arguments { buffer.append(contentsOf: argument) }
        buffer.append(0)  // a valid base pointer even when every argument is empty
        let lengths = arguments.map(\.count)
        let status = buffer.withUnsafeBufferPointer { bytes -> Int32 in
            let base = UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self)
            var offset = 0
            var argv: [UnsafePointer<CChar>?] = lengths.map { length in
                defer { offset += length }
                return base + offset
            }
            return argv.withUnsafeMutableBufferPointer { argvPointer in
                redisAsyncCommandArgv(ac, HiredisConnection.replyCallback, privdata,
                                      Int32(arguments.count), argvPointer.baseAddress, lengths)
            }
        }
        if status != REDIS_OK, let privdata {
            Unmanaged<PendingCommand>.fromOpaque(privdata).release()
            return false
        }
        return true
    }

    /// Frees the context now (or, inside a hiredis callback, when it returns): pending commands
    /// get NULL replies, then `connectionDidClose` with `reason`.
    func close(reason: String) {
        guard let ac = context else { return }
        if closeReason == nil { closeReason = reason }
        redisAsyncFree(ac)
    }

    /// Why replies stopped: our own reason, else hiredis's error text.
    var failureReason: String {
        if let closeReason { return closeReason }
        if let ac = context, ac.pointee.err != 0 { return String(cString: ac.pointee.errstr) }
        return "connection closed"
    }

    func handleIO(_ events: IOEvents) {
        guard let ac = context else { return }
        // While connecting, any event (writable, error, hang-up) settles the connect.
        if !isConnected || events.contains(.write) { redisAsyncHandleWrite(ac) }
        if let ac = context, isConnected, !events.isDisjoint(with: [.read, .hangup]) {
            redisAsyncHandleRead(ac)
        }
    }

    private func setInterest(adding events: IOEvents = [], removing removed: IOEvents = []) {
        let updated = interest.union(events).subtracting(removed)
        guard updated != interest, context != nil else { return }
        interest = updated
        loop.modify(fd, for: updated)
    }

    private func contextFreed() {
        let reason = failureReason
        loop.deregister(fd)
        context = nil
        let delegate = self.delegate
        self.delegate = nil
        delegate?.connectionDidClose(self, reason: reason)
    }

    private static func from(_ data: UnsafeMutableRawPointer?) -> HiredisConnection {
        Unmanaged<HiredisConnection>.fromOpaque(data!).takeUnretainedValue()
    }

    private static let replyCallback: @convention(c) (
        UnsafeMutablePointer<redisAsyncContext>?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?
    ) -> Void = { ac, reply, privdata in
        let command = privdata.map { Unmanaged<PendingCommand>.fromOpaque($0).takeRetainedValue() }
        let connection = HiredisConnection.from(ac!.pointee.ev.data)
        let value = reply.map { RedisReply(copying: $0.assumingMemoryBound(to: redisReply.self)) }
        connection.delegate?.connection(connection, received: value, for: command)
    }
}
