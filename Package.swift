// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
  name: "UserProto",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "MaskCore", targets: ["MaskCore"]),
    .library(name: "UserProto", targets: ["UserProto"]),
    .library(name: "ExampleProtocols", targets: ["ExampleProtocols"]),
    .library(name: "UserProtoLifecycle", targets: ["UserProtoLifecycle"]),
    .executable(name: "userproto", targets: ["Examples"]),
    // The C shim, for the benchmark package only; not a supported API.
    .library(name: "CUserProtoShim", targets: ["CUserProtoShim"]),
    // The pthread lock, for the benchmark package only; not a supported API.
    .library(name: "Locking", targets: ["Locking"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    // DocC: `swift package generate-documentation` (scripts/docs.sh,
    // docs/documentation.md). A command plugin only: no target depends on it,
    // and it is built only when the documentation is.
    .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
  ],
  targets: [
    // Everything Swift cannot import cleanly: the packed efd_mask ABI struct,
    // eventfd2, accept4, and liburing (kept out of the header).
    .target(
      name: "CUserProtoShim",
      cSettings: [.define("_GNU_SOURCE")],
      linkerSettings: [.linkedLibrary("uring")]
    ),
    // The mask fd: synchronous, no event loop.
    // The lock every module uses instead of Synchronization.Mutex: pthread
    // based, so ThreadSanitizer sees it (Sources/Locking/Lock.swift).
    .target(name: "Locking", swiftSettings: strict),
    .target(
      name: "MaskCore",
      dependencies: ["CUserProtoShim", "Locking"],
      swiftSettings: strict
    ),
    // Sockets, event loop and transports, on top of MaskCore. Logs through
    // swift-log (docs/logging.md); exports socket statistics through
    // swift-metrics when asked (docs/metrics.md: CoreMetrics, the product
    // without Foundation; applications' `import Metrics` re-exports it).
    .target(
      name: "UserProto",
      dependencies: [
        "MaskCore", "CUserProtoShim", "Locking",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        // `Errno`, IOError's typed errno (docs/eventloop.md, "Syscalls").
        .product(name: "SystemPackage", package: "swift-system"),
      ],
      swiftSettings: strict
    ),
    // Sockets, loops and loop groups as ServiceLifecycle services
    // (docs/lifecycle.md): a module of its own, so only applications that
    // use swift-service-lifecycle build it.
    .target(
      name: "UserProtoLifecycle",
      dependencies: [
        "UserProto",
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict
    ),
    // The example protocols, as Socket<Handler> handlers: the tutorial's
    // framed protocol, and nanomsg SP REQ/REP, PUB/SUB, PUSH/PULL, PAIR,
    // SURVEYOR/RESPONDENT and BUS.
    .target(
      name: "ExampleProtocols",
      // Locking: SPDevice's run state (Sources/Examples/Protocols/SP/SPDevice.swift).
      dependencies: ["UserProto", "Locking"],
      path: "Sources/Examples/Protocols",
      swiftSettings: strict
    ),
    // `userproto`: the demo and the example protocols' command line.
    .executableTarget(
      name: "Examples",
      dependencies: [
        "UserProto", "ExampleProtocols", "CUserProtoShim", "Locking", "UserProtoLifecycle",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      path: "Sources/Examples/CLI",
      swiftSettings: strict
    ),
    // C for the tests and their helper programs only (select, SCM_RIGHTS,
    // pipe2, seccomp): in no product.
    .target(
      name: "CUserProtoTestShim",
      path: "Tests/CUserProtoTestShim",
      cSettings: [.define("_GNU_SOURCE")]
    ),
    // A small helper the tests run in another process: it inspects an
    // inherited or SCM_RIGHTS-passed mask fd, and runs EMFILE and leak checks
    // in a process of its own.
    .executableTarget(
      name: "maskcore-inspect",
      dependencies: ["MaskCore", "CUserProtoTestShim"],
      path: "Sources/MaskCoreInspect",
      swiftSettings: strict
    ),
    // Process-isolated checks for the UserProto tests (seccomp, fd leaks).
    .executableTarget(
      name: "userproto-check",
      dependencies: ["UserProto", "CUserProtoTestShim"],
      path: "Sources/UserProtoCheck",
      swiftSettings: strict
    ),
    // The two ends of the fault scenarios scripts/faults.sh runs in network
    // namespaces (docs/reliability.md, "Faults"): one JSON line per run.
    .executableTarget(
      name: "userproto-netfault",
      dependencies: ["UserProto", "ExampleProtocols"],
      path: "Sources/UserProtoNetFault",
      swiftSettings: strict
    ),
    // The bounded soak scripts/soak.sh runs (docs/reliability.md#soak):
    // connection churn, pub/sub with a slow and a vanishing subscriber, and
    // loop timers, sampling RSS and the fd count every second.
    .executableTarget(
      name: "userproto-soak",
      dependencies: ["UserProto", "ExampleProtocols", "Locking"],
      path: "Sources/UserProtoSoak",
      swiftSettings: strict
    ),
    // Helpers shared by the test targets (running helper processes).
    .target(
      name: "TestSupport",
      dependencies: ["CUserProtoTestShim"],
      path: "Tests/TestSupport",
      swiftSettings: strict
    ),
    .testTarget(
      name: "UserProtoTests",
      dependencies: [
        "UserProto", "CUserProtoShim", "userproto-check", "TestSupport", "Locking",
        .product(name: "PropertyBased", package: "swift-property-based"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "MetricsTestKit", package: "swift-metrics"),
        "UserProtoLifecycle",
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict
    ),
    .testTarget(
      name: "ExamplesTests",
      dependencies: ["Examples", "ExampleProtocols", "UserProto", "TestSupport", "Locking"],
      swiftSettings: strict
    ),
    .testTarget(
      name: "MaskCoreTests",
      dependencies: ["MaskCore", "CUserProtoShim", "CUserProtoTestShim", "maskcore-inspect", "TestSupport"],
      swiftSettings: strict
    ),
  ]
)
