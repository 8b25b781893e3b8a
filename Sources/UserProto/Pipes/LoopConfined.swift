/// A value that is only ever used on one event loop's thread, carried
/// through a `@Sendable` closure (a timer, a task) that runs there. The
/// unchecked conformance is this type's promise: it is created on the
/// loop, and every closure that carries it runs on that loop.
struct LoopConfined<Value>: @unchecked Sendable {
  let value: Value
  init(_ value: Value) { self.value = value }
}

/// A weak reference carried the same way as ``LoopConfined``.
struct WeakLoopConfined<Value: AnyObject>: @unchecked Sendable {
  weak var value: Value?
  init(_ value: Value) { self.value = value }
}
