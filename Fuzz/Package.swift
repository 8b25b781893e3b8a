// swift-tools-version: 6.1
// The libFuzzer targets live in their own package, as the benchmarks do, so
// the main build stays as it is. They build only with `--sanitize=fuzzer`
// (libFuzzer brings `main`: SwiftPM then leaves the executables' entry
// point alone) and in debug (`@testable import` reaches the internals they
// drive). scripts/fuzz.sh builds and runs them; docs/reliability.md says why.
import PackageDescription

let strict: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("InternalImportsByDefault"),
]

let userProto = Target.Dependency.product(name: "UserProto", package: "UserProto")
let exampleProtocols = Target.Dependency.product(name: "ExampleProtocols", package: "UserProto")

let package = Package(
  name: "UserProtoFuzz",
  platforms: [.macOS(.v15)],
  dependencies: [.package(name: "UserProto", path: "..")],
  targets: [
    // getaddrinfo(3) and freeaddrinfo(3) for the fuzzer processes: a few
    // fixed names, never the network (see its header).
    .target(name: "CFuzzResolver"),
    // The input reader, the checks, the loop the inputs run on, the
    // in-memory peer and the readiness probe.
    .target(name: "FuzzSupport", dependencies: [userProto], swiftSettings: strict),
    // The SP header and frame decoders of every pattern, both designs.
    .executableTarget(
      name: "SPFramesFuzzer", dependencies: ["FuzzSupport", userProto, exampleProtocols], swiftSettings: strict),
    // TransportURL and SPAddress.
    .executableTarget(
      name: "URLFuzzer", dependencies: ["FuzzSupport", "CFuzzResolver", userProto, exampleProtocols],
      swiftSettings: strict),
    // SocketAddress from C sockaddrs and from text.
    .executableTarget(name: "SocketAddressFuzzer", dependencies: ["FuzzSupport", userProto], swiftSettings: strict),
    // `userproto cat`'s options and formats: CatOptions.swift and
    // CatFormat.swift from Sources/Examples/CLI, through symlinks.
    .executableTarget(name: "CatOptionsFuzzer", dependencies: ["FuzzSupport"], swiftSettings: strict),
    // A socket and its handler over in-memory pipes: the readiness invariant.
    .executableTarget(
      name: "SocketHandlerFuzzer", dependencies: ["FuzzSupport", userProto, exampleProtocols],
      swiftSettings: strict),
  ]
)
