import Glibc
public import Logging
import Synchronization

/// A fixed set of event loops, one thread each, handed out round-robin.
///
/// Every loop of a group uses the same engine: the first loop makes the
/// choice (io_uring, or epoll and why), and the others are started with
/// that engine forced, so a group never mixes engines.
public final class EventLoopGroup: Sendable {
  /// The loops, in creation order.
  public let loops: [EventLoop]
  private let cursor = Atomic<Int>(0)

  /// The engine every loop of the group uses.
  public var backend: EventLoop.Backend { loops[0].backend }
  /// Why the group's engine is in use (the first loop's reason).
  public var backendReason: String { loops[0].backendReason }

  /// The number of CPUs online (at least 1).
  public static var defaultLoopCount: Int {
    max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
  }

  /// Starts `count` loops (default: one per CPU). Loop `i` is named
  /// `"<configuration.name>-<i>"`; each logs to `logger` (see
  /// ``EventLoop/init(configuration:logger:)``; by default nothing).
  /// - Throws: what ``EventLoop/init(configuration:logger:)`` throws; loops
  ///   already started are shut down first.
  public init(
    count: Int = EventLoopGroup.defaultLoopCount, configuration: EventLoop.Configuration = .init(),
    logger: Logger = DisabledLogger.shared
  ) throws(IOError) {
    precondition(count > 0, "an event loop group needs at least one loop")
    var started: [EventLoop] = []
    do throws(IOError) {
      for i in 0..<count {
        var config = configuration
        config.name = "\(configuration.name)-\(i)"
        if let first = started.first {
          // The same engine for every loop: the first one chose it.
          config.backend = first.backend == .ioUring ? .ioUring : .epoll
        }
        started.append(try EventLoop(configuration: config, logger: logger))
      }
    } catch {
      for loop in started { loop.shutdownAndWait() }
      throw error
    }
    loops = started
  }

  /// The next loop, round-robin. Safe from any thread.
  public func next() -> EventLoop {
    let n = cursor.wrappingAdd(1, ordering: .relaxed).oldValue
    return loops[Int(UInt(bitPattern: n) % UInt(loops.count))]
  }

  /// The loop the caller runs on if it is one of the group's, else ``next()``.
  public func any() -> EventLoop {
    loops.first { $0.inEventLoop } ?? next()
  }

  /// True when every loop has stopped.
  public var isShutDown: Bool { loops.allSatisfy(\.isShutDown) }

  /// Shuts every loop down and returns when all have stopped. Not from one
  /// of the group's own loops (it would wait for itself).
  public func shutdown() async {
    await withTaskGroup(of: Void.self) { group in
      for loop in loops { group.addTask { await loop.shutdown() } }
    }
  }

  /// Shuts every loop down and blocks until all have stopped. Not on one of
  /// the group's loops.
  public func shutdownAndWait() {
    precondition(!loops.contains { $0.inEventLoop }, "shutdownAndWait() would deadlock on one of the group's loops")
    // Start every shutdown first, so the loops stop in parallel.
    for loop in loops { loop.beginShutdown() }
    for loop in loops { loop.shutdownAndWait() }
  }
}
