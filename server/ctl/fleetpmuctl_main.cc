// fleetpmuctl: asks fleetpmu-server's Query API about the fleet. Today it knows its commands and
// flags but has no Query client yet, so every command fails with "not connected".
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "proto/fleetpmu/cli/program.h"

ABSL_FLAG(std::string, server, "127.0.0.1:7444",
          "Query API address of fleetpmu-server, host:port (ServerConfig.query_listen)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token sent as 'authorization: Bearer <token>'");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmuctl [flags] COMMAND

Asks fleetpmu-server's Query API (proto/fleetpmu/v1/query.proto) about the fleet.

Commands:
  ownership   which counters of which pCPUs a tenant's vCPUs own (GetCounterOwnership)
  hosts       hosts reporting to the server (ListHosts)
  overflows   overflow events, newest first (ListOverflowEvents)
  lost        lost overflow counts per tenant, host and reason (GetLostOverflowSummary)
  stats       vCPU statistics summed over a time range (GetVcpuStats)

Status: this build has no Query client yet; every command fails with "not connected".)";

struct Command {
  std::string_view name;
  std::string_view rpc;
};

constexpr Command kCommands[] = {
    {"ownership", "GetCounterOwnership"}, {"hosts", "ListHosts"},
    {"overflows", "ListOverflowEvents"},  {"lost", "GetLostOverflowSummary"},
    {"stats", "GetVcpuStats"},
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = fleetpmu::cli::InitProgram(argc, argv, kUsage);
  const std::string program = fleetpmu::cli::ProgramName(argv[0]);
  if (args.size() < 2) return fleetpmu::cli::UsageError(program, "missing COMMAND");
  if (args.size() > 2) {
    return fleetpmu::cli::UsageError(program, absl::StrCat("unexpected argument \"", args[2],
                                                           "\""));
  }
  const std::string name = args[1];
  for (const Command& command : kCommands) {
    if (command.name != name) continue;
    std::cerr << program << ": not connected: this build has no Query client yet ("
              << command.name << " would call fleetpmu.v1.Query/" << command.rpc << " on "
              << absl::GetFlag(FLAGS_server) << ")\n";
    return fleetpmu::cli::kExitFailure;
  }
  return fleetpmu::cli::UsageError(program, absl::StrCat("unknown command \"", name, "\""));
}
