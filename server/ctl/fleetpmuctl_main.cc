// fleetpmuctl: asks fleetpmu-server's Query API about the fleet and prints a table, or JSON
// with --json (docs/server.md "fleetpmuctl"). Exit status: 0 success; 2 usage errors and
// questions about a tenant or host the server does not know (NOT_FOUND) or a request it
// refuses as invalid; 1 anything else (unreachable server, refused token).
#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "proto/fleetpmu/cli/program.h"
#include "server/ctl/ctl_output.h"
#include "server/ctl/query_client.h"
#include "server/ctl/time_flags.h"
#include "server/identity.h"
#include "server/security/tokens.h"

ABSL_FLAG(std::string, server, "127.0.0.1:7444",
          "Query API address of fleetpmu-server, host:port (ServerConfig.query_listen)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token sent as 'authorization: Bearer <token>'");
ABSL_FLAG(bool, plaintext, false,
          "connect without TLS (only to a server running with allow_plaintext)");
ABSL_FLAG(std::string, ca_file, "",
          "PEM CA bundle to verify the server's certificate (default: the system roots)");
ABSL_FLAG(std::string, server_name, "",
          "TLS name expected in the server's certificate if it differs from --server's host");
ABSL_FLAG(bool, json, false, "print the response as JSON (proto3 JSON mapping) instead of a table");
ABSL_FLAG(std::string, tenant, "", "tenant_id (ownership, stats: required with an admin token)");
ABSL_FLAG(std::string, host, "", "only this host_id");
ABSL_FLAG(std::string, vm, "", "stats: only this vm_id");
ABSL_FLAG(std::string, since, "",
          "only the last DUR (90s, 15m, 1h30m, 2d); ownership default 5m, lost and stats 1h");
ABSL_FLAG(std::string, at, "",
          "ownership at one instant: RFC 3339, @<unix seconds> or now (instead of --since)");
ABSL_FLAG(bool, lost, false, "overflows: only lost ones");
ABSL_FLAG(int32_t, limit, 100, "overflows: most events to print, newest first (0 = all)");
ABSL_FLAG(std::string, role, "admin", "hash-token: the role of the token, admin or tenant:ID");
ABSL_FLAG(int32_t, timeout_seconds, 30, "deadline of each Query call");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmuctl [flags] COMMAND [command flags]

Asks fleetpmu-server's Query API (proto/fleetpmu/v1/query.proto) about the fleet.

Commands:
  ownership --tenant T [--host H] [--since DUR | --at TIME]
              per host and pCPU: the counters the tenant's vCPUs owned, h and share per VM
  hosts [--tenant T]
              hosts reporting to the server, their PMUs and ingest cursors
  overflows [--lost] [--tenant T] [--host H] [--since DUR] [--limit N]
              overflow events, newest first
  lost [--tenant T] [--host H] [--since DUR]
              lost overflow counts per tenant, host and reason
  stats --tenant T [--vm V] [--since DUR]
              vCPU statistics summed over a time range
  hash-token [--role admin|tenant:ID] < token
              print the tokens-file line (SHA-256 digest) of a token read from stdin

Connection: --server (default 127.0.0.1:7444), TLS verified with --ca_file or the system
roots, --plaintext only for a server with allow_plaintext; --token_file holds the bearer
token. Output: a table, or --json.
Exit status: 0 ok; 2 usage error, unknown tenant or host, invalid request; 1 other failures.)";

struct Command {
  std::string name;
  std::vector<std::string> flags;  // command flags it accepts
};

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"ownership", {"tenant", "host", "since", "at"}},
      {"hosts", {"tenant"}},
      {"overflows", {"lost", "tenant", "host", "since", "limit"}},
      {"lost", {"tenant", "host", "since"}},
      {"stats", {"tenant", "vm", "since"}},
      {"hash-token", {"role"}},
  };
  return commands;
}

bool IsSet(const std::string& flag) {
  const absl::CommandLineFlag* handle = absl::FindCommandLineFlag(flag);
  return handle != nullptr && handle->CurrentValue() != handle->DefaultValue();
}

// A failed call: the server's message, and the exit status its code deserves.
int Failure(const std::string& program, const absl::Status& status) {
  std::cerr << program << ": " << status.message() << "\n";
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
      return fleetpmu::cli::kExitUsage;
    case absl::StatusCode::kUnavailable:
      std::cerr << program << ": is fleetpmu-server running at " << absl::GetFlag(FLAGS_server)
                << "? (--server, --plaintext, --ca_file)\n";
      return fleetpmu::cli::kExitFailure;
    default:
      return fleetpmu::cli::kExitFailure;
  }
}

template <typename Response>
int Print(const std::string& program, const absl::StatusOr<Response>& response,
          std::string (*table)(const Response&)) {
  if (!response.ok()) return Failure(program, response.status());
  std::cout << (absl::GetFlag(FLAGS_json) ? fleetpmu::ctl::FormatJson(*response)
                                          : table(*response));
  return fleetpmu::cli::kExitOk;
}

int HashToken(const std::string& program) {
  const std::string role = absl::GetFlag(FLAGS_role);
  const bool role_ok = role == "admin" || (role.rfind("tenant:", 0) == 0 &&
                                           fleetpmu::server::IsValidIdentity(role.substr(7)));
  if (!role_ok) {
    return fleetpmu::cli::UsageError(
        program, absl::StrCat("--role \"", role, "\": want admin or tenant:ID"));
  }
  std::string token;
  std::getline(std::cin, token);
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.empty()) return fleetpmu::cli::UsageError(program, "hash-token: no token on stdin");
  std::cout << "sha256:" << fleetpmu::server::Sha256Hex(token) << " " << role << "\n";
  return fleetpmu::cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = fleetpmu::cli::InitProgram(argc, argv, kUsage);
  const std::string program = fleetpmu::cli::ProgramName(argv[0]);
  if (args.size() < 2) return fleetpmu::cli::UsageError(program, "missing COMMAND");
  if (args.size() > 2) {
    return fleetpmu::cli::UsageError(program,
                                     absl::StrCat("unexpected argument \"", args[2], "\""));
  }
  const std::string name = args[1];
  const Command* command = nullptr;
  for (const Command& candidate : Commands()) {
    if (candidate.name == name) command = &candidate;
  }
  if (command == nullptr) {
    return fleetpmu::cli::UsageError(program, absl::StrCat("unknown command \"", name, "\""));
  }
  std::vector<std::string> problems;
  for (const char* flag : {"tenant", "host", "vm", "since", "at", "lost", "limit", "role"}) {
    const bool accepted =
        std::find(command->flags.begin(), command->flags.end(), flag) != command->flags.end();
    if (IsSet(flag) && !accepted) {
      problems.push_back(absl::StrCat("--", flag, " does not apply to \"", name, "\""));
    }
  }
  if (IsSet("since") && IsSet("at")) problems.push_back("--since and --at exclude each other");
  if ((name == "ownership" || name == "stats") && absl::GetFlag(FLAGS_tenant).empty() &&
      absl::GetFlag(FLAGS_token_file).empty()) {
    problems.push_back(absl::StrCat("\"", name, "\" needs --tenant T"));
  }
  if (absl::GetFlag(FLAGS_limit) < 0) problems.push_back("--limit must be >= 0");
  if (!problems.empty()) return fleetpmu::cli::UsageError(program, absl::StrJoin(problems, "\n"));

  if (name == "hash-token") return HashToken(program);

  // Time arguments.
  const absl::Time now = absl::Now();
  int64_t since_unix_ns = 0;
  if (!absl::GetFlag(FLAGS_since).empty()) {
    absl::StatusOr<absl::Duration> since = fleetpmu::ctl::ParseSince(absl::GetFlag(FLAGS_since));
    if (!since.ok())
      return fleetpmu::cli::UsageError(program, std::string(since.status().message()));
    since_unix_ns = absl::ToUnixNanos(now - *since);
  }
  int64_t at_unix_ns = 0;
  if (!absl::GetFlag(FLAGS_at).empty()) {
    absl::StatusOr<int64_t> at = fleetpmu::ctl::ParseAt(absl::GetFlag(FLAGS_at), now);
    if (!at.ok()) return fleetpmu::cli::UsageError(program, std::string(at.status().message()));
    at_unix_ns = *at;
  }

  fleetpmu::ctl::QueryClientOptions options;
  options.address = absl::GetFlag(FLAGS_server);
  options.plaintext = absl::GetFlag(FLAGS_plaintext);
  options.ca_file = absl::GetFlag(FLAGS_ca_file);
  options.server_name = absl::GetFlag(FLAGS_server_name);
  options.timeout = absl::Seconds(std::max(1, absl::GetFlag(FLAGS_timeout_seconds)));
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    std::ifstream file(path);
    if (!file) {
      return fleetpmu::cli::UsageError(program,
                                       absl::StrCat("--token_file ", path, ": cannot read it"));
    }
    std::ostringstream text;
    text << file.rdbuf();
    options.token = std::string(absl::StripAsciiWhitespace(text.str()));
  }
  absl::StatusOr<std::unique_ptr<fleetpmu::ctl::QueryClient>> client =
      fleetpmu::ctl::QueryClient::Connect(options);
  if (!client.ok()) {
    return fleetpmu::cli::UsageError(program, std::string(client.status().message()));
  }

  const std::string tenant = absl::GetFlag(FLAGS_tenant);
  const std::string host = absl::GetFlag(FLAGS_host);
  if (name == "ownership") {
    fleetpmu::v1::GetCounterOwnershipRequest request;
    request.set_tenant_id(tenant);
    request.set_host_id(host);
    if (at_unix_ns != 0) {
      request.set_at_unix_ns(at_unix_ns);
    } else if (since_unix_ns != 0) {
      request.mutable_range()->set_start_unix_ns(since_unix_ns);
    }
    return Print(program, (*client)->Ownership(request, 0), &fleetpmu::ctl::FormatOwnership);
  }
  if (name == "hosts") {
    fleetpmu::v1::ListHostsRequest request;
    request.set_tenant_id(tenant);
    return Print(program, (*client)->Hosts(request, 0), &fleetpmu::ctl::FormatHosts);
  }
  if (name == "overflows") {
    fleetpmu::v1::ListOverflowEventsRequest request;
    request.set_lost_only(absl::GetFlag(FLAGS_lost));
    request.set_tenant_id(tenant);
    request.set_host_id(host);
    request.set_since_unix_ns(since_unix_ns);
    return Print(program, (*client)->Overflows(request, absl::GetFlag(FLAGS_limit)),
                 &fleetpmu::ctl::FormatOverflows);
  }
  if (name == "lost") {
    fleetpmu::v1::GetLostOverflowSummaryRequest request;
    request.set_tenant_id(tenant);
    request.set_host_id(host);
    if (since_unix_ns != 0) request.mutable_range()->set_start_unix_ns(since_unix_ns);
    return Print(program, (*client)->Lost(request, 0), &fleetpmu::ctl::FormatLost);
  }
  fleetpmu::v1::GetVcpuStatsRequest request;
  request.set_tenant_id(tenant);
  request.set_vm_id(absl::GetFlag(FLAGS_vm));
  if (since_unix_ns != 0) request.mutable_range()->set_start_unix_ns(since_unix_ns);
  return Print(program, (*client)->Stats(request, 0), &fleetpmu::ctl::FormatStats);
}
