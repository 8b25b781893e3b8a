public import ArgumentParser
public import Logging

/// `--log-level`: where a command's library log lines go (swift-log).
///
/// The lines UserProto logs (docs/logging.md: pipes failing, re-dials,
/// accept back-offs, the loop's engine) go to stderr through swift-log's
/// `StreamLogHandler`, at and above the level given. The default, warning,
/// shows none of them (the library logs nothing above notice); `notice`
/// shows failures, `debug` every pipe coming and going.
struct LoggingOptions: ParsableArguments {
  @Option(help: "Log the library's lines at and above this level to stderr (trace, debug, info, notice, warning).")
  var logLevel: Logger.Level = .warning

  /// A logger for `label` writing to stderr at ``logLevel``. Made with its
  /// own handler rather than `LoggingSystem.bootstrap`, so a test that runs
  /// a command in-process leaves the process-wide logging setup alone.
  func logger(label: String) -> Logger {
    var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = logLevel
    return logger
  }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
