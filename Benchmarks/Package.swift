// swift-tools-version: 6.1
// Benchmarks live in their own package so the main build stays fast.
import PackageDescription

let package = Package(
  name: "UserProtoBenchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(name: "UserProto", path: ".."),
    // The peer measured in the same run as our echo servers.
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
  ],
  targets: [
    // Mask fd transition cost and wake latency against eventfd, one run.
    .executableTarget(
      name: "MaskFDBench",
      dependencies: [
        .product(name: "MaskCore", package: "UserProto"),
        .product(name: "CUserProtoShim", package: "UserProto"),
      ],
      swiftSettings: [.unsafeFlags(["-Ounchecked"])]
    ),
    // Timing, statistics, tables, loopback sockets and process helpers
    // shared by the loop benchmarks.
    .target(name: "BenchSupport", dependencies: ["CBenchSupport"]),
    .target(name: "CBenchSupport"),
    // Raw loop streams and length-prefix framing on top of UserProto.
    .target(
      name: "LoopSupport",
      dependencies: ["BenchSupport", .product(name: "UserProto", package: "UserProto")]
    ),
    // The event loop alone: cross-thread wake, TCP ping-pong and
    // 16-connection throughput, io_uring against epoll in one run.
    .executableTarget(
      name: "LoopBench",
      dependencies: ["BenchSupport", "LoopSupport", .product(name: "UserProto", package: "UserProto")]
    ),
    // The echo servers EchoBench drives, one process each:
    // `EchoServers loop-raw|loop-socket|nio [--backend io_uring|epoll]`.
    .executableTarget(
      name: "EchoServers",
      dependencies: [
        "BenchSupport",
        .product(name: "UserProto", package: "UserProto"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ]
    ),
    // Runs every echo server in its own process and drives each with the
    // same C client (echo-client) in one run.
    .executableTarget(name: "EchoBench", dependencies: ["BenchSupport"]),
    // The client EchoBench uses: blocking sockets, one pthread per connection.
    .executableTarget(name: "echo-client", path: "c/echo-client"),
    // The floor: a blocking C echo server, one pthread per connection.
    .executableTarget(name: "echo-server-c", path: "c/echo-server"),
    // The second socket design (Socket<Handler>) against the first
    // (ProtocolSocket), same framing, one run.
    .executableTarget(
      name: "HandleBench",
      dependencies: ["BenchSupport", "LoopSupport", .product(name: "UserProto", package: "UserProto")]
    ),
    // UDP request/reply: ProtocolListener.udp against a raw recvfrom/sendto echo.
    .executableTarget(
      name: "UDPBench",
      dependencies: ["BenchSupport", .product(name: "UserProto", package: "UserProto")]
    ),
    // What ProtocolSocket adds per message over the raw loop transport.
    .executableTarget(
      name: "SocketOverhead",
      dependencies: ["BenchSupport", "LoopSupport", .product(name: "UserProto", package: "UserProto")]
    ),
    // Our side of the peer benchmarks (docs/benchmarks.md): the SP echo
    // server (REP) and publisher (PUB), and REQ/SUB clients polled by fd,
    // all Socket<Handler> with ExampleProtocols' SP handlers.
    .executableTarget(
      name: "PeerServers",
      dependencies: [
        "BenchSupport",
        .product(name: "UserProto", package: "UserProto"),
        .product(name: "ExampleProtocols", package: "UserProto"),
        .product(name: "CUserProtoShim", package: "UserProto"),
      ]
    ),
    // Locking.Lock (pthread) against Synchronization.Mutex, one run.
    .executableTarget(
      name: "LockBench",
      dependencies: [.product(name: "Locking", package: "UserProto")]
    ),
    // 10,000 and 100,000 mask fds and sockets in one process.
    .executableTarget(
      name: "ScaleBench",
      dependencies: [
        "BenchSupport",
        .product(name: "MaskCore", package: "UserProto"),
        .product(name: "UserProto", package: "UserProto"),
        .product(name: "CUserProtoShim", package: "UserProto"),
      ]
    ),
  ]
)
