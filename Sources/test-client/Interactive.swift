// `test-client interactive`: the restaurant's side by hand. It asks (on standard input) for a
// restaurant and an order, accepts that order, then shows what happened to it: the order's status,
// the automatic driver assignment the acceptance set off, and the assignment itself. `--restaurant`
// and `--order` skip the questions, for scripts.
import ArgumentParser
import PlatformProtos

struct Interactive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accept an order and follow what happens to it.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var watch: AssignmentWatchOptions
    @Option(help: "restaurant_id (asked for when missing).") var restaurant: String?
    @Option(help: "order_id (asked for when missing).") var order: String?

    func run() async throws {
        let restaurantID = try restaurant ?? Self.ask("restaurant_id")
        let orderID = try order ?? Self.ask("order_id")
        let services = try connection.connect()
        defer { services.close() }
        var steps = Steps()
        do {
            _ = try await steps.run("Accept the order", sent: "AcceptOrder restaurant_id=\(restaurantID) order_id=\(orderID)") { () throws(ServiceError) in
                let response = try await services.restaurant.call {
                    try await $0.acceptOrder(AcceptOrderRequest(restaurantId: restaurantID, orderId: orderID), options: $1)
                }
                return Outcome((), got: response.summary, ok: response.status == "ACCEPTED",
                               pass: "order accepted: \(orderID)", fail: "expected ACCEPTED, got \(response.status)")
            }
            try await steps.watchAutomaticAssignment(of: orderID, services, watch)
        } catch {
            throw ExitCode.failure
        }
    }

    /// Prompts on standard output and reads one line; an empty answer asks again.
    private static func ask(_ field: String) throws -> String {
        while true {
            print("\(field): ", terminator: "")
            guard let line = readLine() else { throw ValidationError("no \(field) given (standard input ended)") }
            let answer = line.filter { !$0.isWhitespace }
            if !answer.isEmpty { return answer }
        }
    }
}
