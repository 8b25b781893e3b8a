// swift-tools-version: 6.1
// Benchmarks live in their own package so the main build stays fast.
import PackageDescription

let package = Package(
  name: "UserProtoBenchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(name: "UserProto", path: "..")
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
    )
  ]
)
