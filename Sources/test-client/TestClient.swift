// test-client: the platform from a user's side. With no arguments it runs the guided tour; its
// subcommands call one RPC each (for scripts), check health (also the containers' health check),
// accept an order interactively, generate load, and mint development tokens. Every calling
// subcommand takes the same address, timeout and credential flags (ConnectionOptions).
import ArgumentParser

@main
struct TestClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test-client",
        abstract: "Talks to OrderService, RestaurantService and DeliveryService.",
        subcommands: [
            Tour.self, Interactive.self, OrderCommands.self, RestaurantCommands.self, DeliveryCommands.self,
            Health.self, Bench.self, MintToken.self,
        ],
        defaultSubcommand: Tour.self)
}
