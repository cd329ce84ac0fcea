// The narrated steps the tour and the interactive mode are made of. A step prints what it sends,
// makes its calls, prints what came back and a ✓ or ✗ verdict at the start of a line (scripts grep
// for those). Steps build on each other's results, so the first failure stops the walk.
import ArgumentParser
import PlatformProtos

/// What a step found: its result for later steps, the reply to show, and whether it is as expected.
struct Outcome<Value> {
    let value: Value
    let got: String
    let verdict: String
    let ok: Bool

    /// `pass` or `fail` as the verdict, depending on `ok`.
    init(_ value: Value, got: String, ok: Bool, pass: String, fail: @autoclosure () -> String) {
        self.value = value
        self.got = got
        self.ok = ok
        verdict = ok ? pass : fail()
    }
}

/// A walk stopped at a failed step (already reported on standard output).
struct StepFailed: Error {}

/// Runs numbered steps, counting those that passed.
struct Steps {
    private(set) var passed = 0

    /// Prints the title and what is sent, runs `body`, prints the reply and the verdict.
    mutating func run<Value>(_ title: String, sent: String,
                             _ body: () async throws(ServiceError) -> Outcome<Value>) async throws(StepFailed) -> Value {
        print("\n[\(passed + 1)] \(title)")
        print("  → \(sent)")
        let outcome: Outcome<Value>
        do {
            outcome = try await body()
        } catch {
            print("✗ \(error)")
            throw StepFailed()
        }
        print("  ← \(outcome.got)")
        print("\(outcome.ok ? "✓" : "✗") \(outcome.verdict)")
        guard outcome.ok else { throw StepFailed() }
        passed += 1
        return outcome.value
    }
}

extension Services {
    /// Reads the order's status until it is `status` or `patience` has passed; returns the last reply.
    func waitForOrder(_ orderID: String, toBe status: String, patience: Duration) async throws(ServiceError) -> GetOrderStatusResponse {
        let deadline = ContinuousClock.now + patience
        while true {
            let response = try await order.call { try await $0.getOrderStatus(GetOrderStatusRequest(orderId: orderID), options: $1) }
            if response.status == status || ContinuousClock.now >= deadline { return response }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The first of `drivers` with an assignment for the order, and that assignment.
    func findAssignment(of orderID: String, among drivers: [String]) async throws(ServiceError) -> (driver: String, assignment: DeliveryAssignment)? {
        for driver in drivers {
            let response = try await delivery.call {
                try await $0.getDriverAssignments(GetDriverAssignmentsRequest(driverId: driver), options: $1)
            }
            if let assignment = response.assignments.last(where: { $0.orderId == orderID }) {
                return (driver, assignment)
            }
        }
        return nil
    }
}

/// How to observe the automatic assignment that follows an acceptance.
struct AssignmentWatchOptions: ParsableArguments {
    @Option(name: .customLong("auto-driver"), help: "A driver of the delivery service's DRIVERS pool; repeat for several.")
    var autoDrivers: [String] = ["driver_auto"]
    @Option(help: "Seconds to wait for the automatic assignment.")
    var wait: Double = 10

    var patience: Duration { .milliseconds(Int64(wait * 1000)) }
}

extension Steps {
    /// Two steps: the order turns ASSIGNED by itself, and one of the pool's drivers lists it.
    mutating func watchAutomaticAssignment(of orderID: String, _ services: Services,
                                           _ watch: AssignmentWatchOptions) async throws(StepFailed) {
        _ = try await run("Wait for the delivery service to assign a driver",
                          sent: "GetOrderStatus order_id=\(orderID), every 100 ms for up to \(watch.wait) s") { () throws(ServiceError) in
            let response = try await services.waitForOrder(orderID, toBe: "ASSIGNED", patience: watch.patience)
            return Outcome((), got: response.summary, ok: response.status == "ASSIGNED",
                           pass: "order \(orderID) is ASSIGNED", fail: "no driver after \(watch.wait) s: the order is \(response.status)")
        }
        let sent = watch.autoDrivers.map { "GetDriverAssignments driver_id=\($0)" }.joined(separator: ", ")
        _ = try await run("Find the driver", sent: sent) { () throws(ServiceError) in
            let found = try await services.findAssignment(of: orderID, among: watch.autoDrivers)
            return Outcome((), got: found.map { "\($0.driver): \($0.assignment.line)" } ?? "no assignment for \(orderID)",
                           ok: found != nil, pass: "driver assigned automatically: \(orderID) -> \(found?.driver ?? "")",
                           fail: "none of \(watch.autoDrivers.joined(separator: ", ")) has \(orderID); pass the DRIVERS pool with --auto-driver")
        }
    }
}
