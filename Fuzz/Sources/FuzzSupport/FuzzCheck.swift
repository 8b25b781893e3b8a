import Glibc

/// Stops the run when a property does not hold: the message goes to
/// stderr, then the process traps, which libFuzzer reports as a crash and
/// saves the input as `crash-<sha1>` (scripts/fuzz.sh runs with the Swift
/// backtracer off, so libFuzzer's own handler sees the signal).
public func fuzzCheck(
  _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
  file: StaticString = #fileID, line: UInt = #line
) {
  guard !condition() else { return }
  fatalError("fuzz property violated: \(message())", file: file, line: line)
}

/// Open file descriptors of this process (the entries of /proc/self/fd,
/// minus the one the count itself opens).
public func openDescriptorCount() -> Int {
  guard let directory = opendir("/proc/self/fd") else { return -1 }
  defer { closedir(directory) }
  var count = 0
  while let entry = readdir(directory) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in raw.prefix { $0 != 0 } }
    if !name.elementsEqual(".".utf8) && !name.elementsEqual("..".utf8) { count += 1 }
  }
  return count - 1  // the directory stream's own fd
}

/// Every descriptor this process has open is close-on-exec (stdin, stdout
/// and stderr excepted): the numbers of those that are not.
public func descriptorsWithoutCloseOnExec() -> [Int32] {
  guard let directory = opendir("/proc/self/fd") else { return [] }
  defer { closedir(directory) }
  let own = dirfd(directory)
  var found: [Int32] = []
  while let entry = readdir(directory) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
    guard let fd = Int32(String(decoding: name, as: UTF8.self)), fd > 2, fd != own else { continue }
    let flags = fcntl(fd, F_GETFD)
    if flags >= 0 && flags & FD_CLOEXEC == 0 { found.append(fd) }
  }
  return found
}
