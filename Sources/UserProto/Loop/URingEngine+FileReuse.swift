// MARK: fd numbers reused after a close without cancel

extension URingEngine {
  private func fileID(_ fd: Int32) throws(IOError) -> FileID {
    let identity = try Sys.fileIdentity(fd)
    return FileID(device: identity.device, inode: identity.inode)
  }

  /// Before a long-lived operation on `fd`: if operations are still running
  /// for another file that had this number (closed without cancelling
  /// them), they are ended with EBADF. io_uring holds its own reference to
  /// that file, so they would otherwise run on until cancelled.
  func checkFile(_ fd: Int32) throws(IOError) {
    let file = try fileID(fd)
    guard let users = fileUsers[fd] else {
      fileUsers[fd] = (file, [])
      return
    }
    guard users.file != file else { return }
    fileUsers[fd] = (file, [])
    for token in users.tokens {
      staleTokens.insert(token)
      cancel(token: token)
    }
  }

  func track(_ fd: Int32, _ token: UInt64) {
    fileUsers[fd]?.tokens.insert(token)
  }

  func untrack(_ token: UInt64, _ record: Record) {
    let fd: Int32
    switch record {
    case .poll(let f, _, _), .accept(let f, _), .connect(let f, _), .receive(let f, _, _), .receiveFrom(let f, _):
      fd = f
    case .send, .sendTo: return
    }
    guard var users = fileUsers[fd], users.tokens.remove(token) != nil else { return }
    fileUsers[fd] = users.tokens.isEmpty ? nil : users
  }
}
