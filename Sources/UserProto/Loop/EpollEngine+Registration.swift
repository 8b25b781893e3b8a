import CUserProtoShim
import Glibc

// Registration: one epoll entry per fd, keyed by a serial, and what becomes
// of an entry whose fd was closed while registered or that has nothing left.
extension EpollEngine {
  /// The entry of `fd`, registering it when new.
  ///
  /// An existing entry is verified first: epoll keys a registration by the
  /// file and the number, so if the fd was closed while registered and its
  /// number reused by another file, ADD succeeds (the new file was not in
  /// the set) where the same file gives EEXIST. The stale entry's operations
  /// then end with EBADF, and the new file gets a fresh entry.
  func entry(for fd: Int32) throws(IOError) -> Entry {
    let entry = Entry(fd: fd, serial: nextSerial)
    var event = epoll_event()
    event.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLPRI.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
    event.data.u64 = entry.serial
    // EEXIST (false) means this file is registered under the number.
    let added = try Sys.epollAdd(epfd, fd, &event)
    if let existing = entries[fd] {
      if !added { return existing }
      // Only a successful ADD proves the entry's file is gone.
      retireStale(existing)
    } else if !added {
      // Registered by an entry whose removal failed: take it over.
      try Sys.epollModify(epfd, fd, &event)
    }
    nextSerial += 1
    entries[fd] = entry
    bySerial[entry.serial] = entry
    return entry
  }

  /// Ends every operation of an entry whose fd was closed while registered.
  private func retireStale(_ entry: Entry) {
    let error = IOError("fd closed while registered", EBADF)
    var tokens = entry.pollTokens.map(\.0)
    tokens += [entry.acceptToken, entry.receiveToken, entry.connect?.token].compactMap { $0 }
    tokens += entry.sends.map(\.token)
    for token in tokens {
      owners[token] = nil
      queued.append(LoopCompletion(token: token, value: .failed(error), isFinal: true))
    }
    entry.pollTokens = []
    entry.acceptToken = nil
    entry.receiveToken = nil
    entry.connect = nil
    entry.sends = []
    // Its registration went with the old file (or, if the file lives on in
    // another process or fd, its events carry a serial nobody looks up).
    if entries[entry.fd] === entry { entries[entry.fd] = nil }
    bySerial[entry.serial] = nil
  }

  func retireIfIdle(_ entry: Entry) {
    guard entry.isIdle, entries[entry.fd] === entry else { return }
    do throws(IOError) {
      try Sys.epollDelete(epfd, entry.fd)
    } catch {
      // The fd was closed while registered (EBADF, ENOENT: the registration
      // went with its file), or the removal failed: a later ADD of the
      // number finds EEXIST and takes the registration over (entry(for:)).
    }
    entries[entry.fd] = nil
    bySerial[entry.serial] = nil
  }
}
