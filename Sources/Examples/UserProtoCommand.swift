import ArgumentParser

@main
struct UserProtoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "userproto",
    abstract: "UserProto: user-space protocols with real, pollable file descriptors.",
    subcommands: [Demo.self, Fidelity.self, MixedPollCommand.self],
    defaultSubcommand: Demo.self
  )
}
