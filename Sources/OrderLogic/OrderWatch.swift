// A WatchOrder call after its snapshot: no task waits for the order's next change. The handler
// follows the order's topic on the EventHub before it reads the snapshot, sends the snapshot,
// hands its responses over (`RPCWriter.handOver`) and returns; from then on this follower is the
// call. The hub hands it each event of the order from the partition's reader, one at a time and
// in stream order; it applies the event with the projection's rules (`OrderProgress.after`),
// skipping those the snapshot already shows, and queues the update without waiting. Events that
// come while the snapshot is still being read are held until `start`. An idle watcher therefore
// costs this object, its HTTP/2 stream and the hub's entry (BENCHMARKS.md, "WatchOrder fan-out").
//
// The call ends on a final status (OK), when the hub stops (UNAVAILABLE), or by itself (the
// client cancels, the deadline, a client that does not read); the hub registration goes with it,
// released by the call's end.
import PlatformCommon
import PlatformProtos
import RPCCore
import Synchronization

/// Follows one order for a WatchOrder call whose handler has returned.
final class OrderWatch: EventFollower {
    private struct Following {
        var progress: OrderProgress
        var update: OrderUpdate
        /// The event the snapshot reflects: older ones are skipped.
        let snapshotEvent: StreamID
        let responses: HandedOverWriter<OrderUpdate>
    }

    private struct State {
        /// Events that arrived before `start`, at most `EventHub.bufferLimit`.
        var early: [PlatformEvent] = []
        var overflowed = false
        /// Why the hub stopped before `start`: the call ends with it there.
        var hubEnded: RPCError?
        var following: Following?
        var done = false
    }

    private let state = Mutex(State())

    /// Takes over the call: sends what the held events change, then each later change. The
    /// call's end cancels `registration`.
    func start(progress: OrderProgress, update: OrderUpdate, snapshotEvent: StreamID,
               responses: HandedOverWriter<OrderUpdate>, registration: HubRegistration) {
        responses.whenEnded { _ in registration.cancel() }
        state.withLock { state in
            if let error = state.hubEnded ?? (state.overflowed
                ? RPCError(.resourceExhausted, "the watcher fell more than \(EventHub.bufferLimit) events behind") : nil) {
                state.done = true
                responses.finish(error)
                return
            }
            state.following = Following(progress: progress, update: update, snapshotEvent: snapshotEvent, responses: responses)
            for event in state.early { Self.apply(event, to: &state) }
            state.early = []
        }
    }

    func receive(_ event: PlatformEvent) {
        state.withLock { state in
            guard !state.done else { return }
            guard state.following != nil else {
                if state.early.count < EventHub.bufferLimit { state.early.append(event) } else { state.overflowed = true }
                return
            }
            Self.apply(event, to: &state)
        }
    }

    func hubEnded(_ error: RPCError) {
        state.withLock { state in
            guard !state.done else { return }
            guard let following = state.following else {
                state.hubEnded = error  // the handler still runs: `start` ends the call
                return
            }
            state.done = true
            following.responses.finish(error)
        }
    }

    /// Applies `event` to the followed order and sends the update it makes; a final status ends
    /// the call.
    private static func apply(_ event: PlatformEvent, to state: inout State) {
        guard !state.done, var following = state.following, let eventID = event.id, eventID > following.snapshotEvent,
              let next = following.progress.after(event) else { return }
        following.progress = next
        following.update.status = next.status.rawValue
        following.update.kitchenStatus = next.kitchen?.rawValue ?? ""
        following.update.deliveryStatus = next.delivery ?? ""
        if let driver = event.driverID, event.kind != .orderCanceled { following.update.driverId = driver }
        if let readyAt = event.readyAtUnixMs { following.update.estimatedReadyAtUnixMs = readyAt }
        if let reason = event.rejectionReason { following.update.rejectReason = reason.rawValue }
        if let reason = event.cancelReason { following.update.cancelReason = reason }
        following.update.updatedAtUnixMs = Int64(eventID.milliseconds)
        following.update.final = next.status.isFinal
        state.following = following
        following.responses.send(following.update)
        if next.status.isFinal {
            state.done = true
            following.responses.finish()
        }
    }
}
