// The outbox-relay command line: subcommands, their options and exit codes.
#pragma once

namespace outbox {

/// Exit codes, following sysexits(3) where one fits.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,    ///< a runtime failure (e.g. PostgreSQL refused a migration)
  kExitThreshold = 3,  ///< `status`: a lag, backlog or dead-row threshold was passed
  kExitUsage = 64,     ///< EX_USAGE: bad command line
  kExitConfig = 78,    ///< EX_CONFIG: the configuration file is invalid
};

/// Parses the command line and runs the chosen subcommand. Errors go to stderr.
int run_command_line(int argc, char** argv);

}  // namespace outbox
