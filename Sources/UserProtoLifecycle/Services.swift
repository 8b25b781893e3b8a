public import ServiceLifecycle
public import UserProto

// UserProto's long-running objects as swift-service-lifecycle services, so
// a `ServiceGroup` starts them with the rest of an application and shuts
// them down in order on SIGTERM or SIGINT (docs/lifecycle.md).
//
// The conformances live in this module, not in UserProto, so that only
// applications that use ServiceLifecycle build it and its dependencies
// (swift-async-algorithms, swift-collections). Both sides belong to this
// package, so the conformances are not retroactive (the compiler agrees).

extension Socket: Service {
  /// Runs until the socket has finished (``Socket/waitUntilFinished()``).
  ///
  /// On graceful shutdown it closes gracefully (``Socket/close()``): the
  /// dialers and listeners stop, accepted sends are handed to the protocol,
  /// queued output goes out and each pipe closes once its peer finished;
  /// whatever is still unsent after ``SocketOptions/closeLinger`` is
  /// dropped with its pipe. On cancellation it aborts (``Socket/abort()``).
  /// A socket closed by the application ends its `run()` too, which a
  /// `ServiceGroup` treats as the service terminating.
  public func run() async throws {
    await withTaskCancellationHandler {
      await withGracefulShutdownHandler {
        await waitUntilFinished()
      } onGracefulShutdown: {
        try? self.close()
      }
    } onCancel: {
      self.abort()
    }
  }
}

extension EventLoop: Service {
  /// Keeps the loop running until graceful shutdown (or cancellation),
  /// then shuts it down and returns once its thread has stopped.
  ///
  /// List the loop before the sockets that use it: a `ServiceGroup` shuts
  /// services down in reverse order, so the sockets finish first.
  public func run() async throws {
    try? await gracefulShutdown()
    await shutdown()
  }
}

extension EventLoopGroup: Service {
  /// Keeps the loops running until graceful shutdown (or cancellation),
  /// then shuts every loop down and returns once all have stopped.
  ///
  /// List the group before the sockets that use it (see
  /// ``EventLoop/run()``).
  public func run() async throws {
    try? await gracefulShutdown()
    await shutdown()
  }
}
