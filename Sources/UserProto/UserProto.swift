// UserProto builds protocol sockets on MaskCore's mask fds. Its event loop and
// sockets arrive with their own issues; until then it re-exports MaskCore so
// that `import UserProto` gives the mask fd.
@_exported public import MaskCore
