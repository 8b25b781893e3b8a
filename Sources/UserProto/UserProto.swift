// UserProto: protocol sockets, their event loop (io_uring, or epoll) and
// transports, built on MaskCore's mask fds. It re-exports MaskCore because its
// public API hands out MaskCore's types (`ProtocolSocket.mask` is a `MaskFD`,
// readiness is `MaskEvents`), so `import UserProto` alone is enough to use them.
@_exported public import MaskCore
