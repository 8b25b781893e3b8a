import ArgumentParser

@main
struct UserProtoCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "userproto",
    abstract: "UserProto: user-space protocols with real, pollable file descriptors.",
    subcommands: [
      Demo.self, EchoServerCommand.self, EchoClientCommand.self, PubCommand.self, SubCommand.self,
      MixedPollCommand.self, MaskDemo.self, Fidelity.self, CatCommand.self,
    ],
    defaultSubcommand: Demo.self
  )
}
