// UserProto: sockets for user-space protocols, each with one pollable fd,
// their event loop (io_uring, or epoll) and transports, built on MaskCore's
// mask fds. It re-exports MaskCore because its public API speaks MaskCore's
// types (a `Socket`'s `fileDescriptor` is a mask fd's, and its `readiness`,
// like `EventLoop.watch(fd:events:_:)`, is `MaskEvents`), so `import UserProto`
// alone is enough to use them.
@_exported public import MaskCore
