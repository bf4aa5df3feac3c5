// Process and file helpers for the tests that run real binaries (sparkled, sparklectl, openssl):
// shell commands with their exit code and output, files read and replaced whole, and a free
// loopback port. No gRPC here (grpc_test_util.h has the gRPC helpers).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sparkle::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when the command did not exit normally (signal) or did not run
  std::string output;  // what it wrote on stdout (add 2>&1 to the command for stderr too)
};

// Runs `command` with /bin/sh -c; its exit code (-1 as in CommandResult). Output goes where
// the test's goes.
int Shell(const std::string& command);

// The same with stdout and stderr discarded.
int QuietShell(const std::string& command);

// Runs `command` with /bin/sh -c and collects its stdout.
CommandResult RunCommand(const std::string& command);

// `binary` followed by each of `args` in single quotes, for RunCommand / Shell. An argument
// must not itself hold a single quote.
std::string CommandLine(const std::string& binary, const std::vector<std::string>& args);

// The whole file at `path`; "" when it cannot be read.
std::string ReadFile(const std::string& path);

// Replaces `path` with `contents` atomically (writes `path`.new, then renames it over `path`),
// so that a daemon watching the file never reads half of it.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

// A TCP port on 127.0.0.1 that was free when asked (bound to port 0 and released), for a
// listener whose port the daemon's log does not name. Another process may take it meanwhile:
// use it at once. 0 when no socket could be bound.
int FreeLoopbackPort();

}  // namespace sparkle::testing
