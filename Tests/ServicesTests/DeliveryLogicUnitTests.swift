// The delivery service's own rules, without a server: DeliveryServiceLogic on a store whose
// answers each test sets. Checked: validation before any storage, which outcome becomes which
// status, that a "no" is asked once more after catching up on the order's partition (an order
// accepted a moment ago may be in events not applied yet) while a "yes" never waits for a
// catch-up, that listings catch up on every partition first, and storage failures as UNAVAILABLE.
@testable import DeliveryLogic
import PlatformCommon
import PlatformProtos
import RPCCore
import Synchronization
import Testing

/// A DeliveryStore that answers what the test queued, and records what it was asked.
final class ScriptedDeliveryStore: DeliveryStore {
    struct State {
        var assignOutcomes: [AssignOutcome] = []
        var updateOutcomes: [UpdateOutcome] = []
        var assignments: [String: [AssignmentRecord]] = [:]
        var asked: [String] = []
        var failure: StorageError?
        var numbers: Int64 = 0
        /// What assignWaiting answers.
        var waitingAssigned = 0
    }

    let state = Mutex(State())

    private func answer<T>(_ question: String, _ body: (inout State) -> T) throws(StorageError) -> T {
        let result = state.withLock { state -> Result<T, StorageError> in
            state.asked.append(question)
            if let failure = state.failure { return .failure(failure) }
            return .success(body(&state))
        }
        return try result.get()
    }

    func nextAssignmentNumber() async throws(StorageError) -> Int64 {
        try answer("number") { state in
            state.numbers += 1
            return state.numbers
        }
    }

    func assign(_ order: String, to driver: String, as assignment: String) async throws(StorageError) -> AssignOutcome {
        try answer("assign \(order) \(driver) \(assignment)") { $0.assignOutcomes.isEmpty ? .assigned : $0.assignOutcomes.removeFirst() }
    }

    func update(_ order: String, to stage: DeliveryStatus) async throws(StorageError) -> UpdateOutcome {
        try answer("update \(order) \(stage.rawValue)") { $0.updateOutcomes.isEmpty ? .updated : $0.updateOutcomes.removeFirst() }
    }

    func assignments(of driver: String, after: Int64?, limit: Int?) async throws(StorageError) -> [AssignmentRecord] {
        try answer("assignments \(driver)") { state in
            let later = (state.assignments[driver] ?? []).filter { $0.number > (after ?? .min) }
            return Array(later.prefix(limit ?? .max))
        }
    }

    func currentDriver(of order: String) async throws(StorageError) -> String? {
        try answer("driver \(order)") { _ in nil }
    }

    func setAvailability(_ driver: String, onShift: Bool) async throws(StorageError) {
        try answer("shift \(driver) \(onShift ? "on" : "off")") { _ in }
    }

    func enlistPool() async throws(StorageError) {
        try answer("enlist") { _ in }
    }

    func stopWaiting(_ orders: [String]) async throws(StorageError) {
        try answer("stop waiting \(orders.joined(separator: ","))") { _ in }
    }

    func assignWaiting() async throws(StorageError) -> Int {
        try answer("assign waiting") { state in state.waitingAssigned }
    }

    func applyOrderEvents(_ events: [PlatformEvent], in partition: OrderPartition) async throws(StorageError) -> AppliedOrderEvents {
        AppliedOrderEvents()
    }
    func waitingCount() async throws(StorageError) -> Int { 0 }
    func applyAssignmentEvents(_ events: [PlatformEvent]) async throws(StorageError) {}
}

@Suite struct DeliveryLogicUnitTests {
    private let context = ServerContext(path: "/test", requestMetadata: Metadata(), deadline: nil)

    private func withLogic(_ store: ScriptedDeliveryStore, _ catchUp: CountingCatchUp,
                           _ body: (DeliveryServiceLogic) async throws -> Void) async throws {
        try await withUnreachableHub { hub in try await body(DeliveryServiceLogic(store: store, events: catchUp, hub: hub,
                                            logger: quietLogger)) }
    }


    @Test func aYesNeedsNoCatchUpAndANoIsAskedOnceMoreAfterOne() async throws {
        let store = ScriptedDeliveryStore()
        let catchUp = CountingCatchUp()
        try await withLogic(store, catchUp) { logic in
            let first = try await logic.assignDriver(AssignDriverRequest(orderId: "order_1", driverId: "d1"), context: context)
            #expect(first == AssignDriverResponse(assignmentId: "assignment_1", status: "ASSIGNED"))
            #expect(catchUp.partitions.withLock { $0.isEmpty })

            // Unknown until the events are applied: the second ask, after the catch-up, succeeds.
            store.state.withLock { $0.assignOutcomes = [.notFound] }
            let second = try await logic.assignDriver(AssignDriverRequest(orderId: "order_2", driverId: "d1"), context: context)
            #expect(second.assignmentId == "assignment_2")
            #expect(catchUp.partitions.withLock { $0 } == [OrderPartition(order: "order_2")])
            #expect(store.state.withLock { $0.asked.filter { $0.hasPrefix("assign order_2") } }
                == ["assign order_2 d1 assignment_2", "assign order_2 d1 assignment_2"], "the same assignment asked again")
        }
    }

    @Test func eachOutcomeHasItsStatus() async throws {
        let store = ScriptedDeliveryStore()
        try await withLogic(store, CountingCatchUp()) { logic in
            let assign = AssignDriverRequest(orderId: "order_1", driverId: "d1")
            for (outcome, expected) in [(AssignOutcome.notFound, StatusCode.notFound), (.notAccepted("PLACED"), .failedPrecondition),
                                        (.delivered, .failedPrecondition)] {
                store.state.withLock { $0.assignOutcomes = [outcome, outcome] }
                #expect(await statusCode { try await logic.assignDriver(assign, context: context) } == expected, "\(outcome)")
            }
            let update = UpdateDeliveryStatusRequest(orderId: "order_1", status: "PICKED_UP")
            for (outcome, expected) in [(UpdateOutcome.noAssignment, StatusCode.notFound), (.delivered, .failedPrecondition)] {
                store.state.withLock { $0.updateOutcomes = [outcome, outcome] }
                #expect(await statusCode { try await logic.updateDeliveryStatus(update, context: context) } == expected, "\(outcome)")
            }
            let updated = try await logic.updateDeliveryStatus(update, context: context)
            #expect(updated.status == "PICKED_UP")
        }
    }

    @Test func badInputNeverReachesTheStore() async throws {
        let store = ScriptedDeliveryStore()
        try await withLogic(store, CountingCatchUp()) { logic in
            #expect(await statusCode { try await logic.assignDriver(AssignDriverRequest(orderId: "", driverId: "d1"), context: context) }
                == .invalidArgument)
            #expect(await statusCode { try await logic.assignDriver(AssignDriverRequest(orderId: "order_1", driverId: "a b"), context: context) }
                == .invalidArgument)
            #expect(await statusCode {
                try await logic.updateDeliveryStatus(UpdateDeliveryStatusRequest(orderId: "order_1", status: "LOST"), context: context)
            } == .invalidArgument)
            #expect(await statusCode { try await logic.getDriverAssignments(GetDriverAssignmentsRequest(driverId: ""), context: context) }
                == .invalidArgument)
            #expect(store.state.withLock { $0.asked }.isEmpty)
        }
    }

    @Test func listingsCatchUpOnEveryPartitionFirstAndStorageFailuresAreUnavailable() async throws {
        let store = ScriptedDeliveryStore()
        let catchUp = CountingCatchUp()
        store.state.withLock {
            $0.assignments["d1"] = [AssignmentRecord(id: "assignment_1", order: "order_1", status: "DELIVERED", lastEvent: nil)]
        }
        try await withLogic(store, catchUp) { logic in
            let listed = try await logic.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1"), context: context)
            #expect(listed.assignments == [DeliveryAssignment(assignmentId: "assignment_1", orderId: "order_1", status: "DELIVERED")])
            #expect(catchUp.partitions.withLock { $0 } == [nil], "every partition")
            store.state.withLock { $0.failure = StorageError(.unavailable, "down") }
            #expect(await statusCode { try await logic.getDriverAssignments(GetDriverAssignmentsRequest(driverId: "d1"), context: context) }
                == .unavailable)
            #expect(await statusCode { try await logic.assignDriver(AssignDriverRequest(orderId: "order_1", driverId: "d1"), context: context) }
                == .unavailable)
        }
    }
}
