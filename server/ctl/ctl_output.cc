#include "server/ctl/ctl_output.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace fleetpmu::ctl {
namespace {

// "LOST_REASON_HOST_CLOBBERED" -> "host_clobbered".
std::string EnumWord(const std::string& name, absl::string_view prefix) {
  absl::string_view word = name;
  if (absl::StartsWith(word, prefix)) word.remove_prefix(prefix.size());
  if (word.empty()) return "-";
  return absl::AsciiStrToLower(word);
}

std::string WithNone(const TextTable& table, bool empty) {
  return table.Render() + (empty ? "(none)\n" : "");
}

std::string Seconds(uint64_t ns) { return absl::StrFormat("%.3fs", static_cast<double>(ns) / 1e9); }

}  // namespace

std::string TextTable::Render() const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    // No trailing blanks (empty last cells).
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string FormatCounterMask(uint32_t mask) {
  std::vector<std::string> parts;
  int bit = 0;
  while (bit < 31) {
    if ((mask & (1u << bit)) == 0) {
      ++bit;
      continue;
    }
    int last = bit;
    while (last + 1 < 31 && (mask & (1u << (last + 1))) != 0) ++last;
    parts.push_back(last == bit ? absl::StrCat(bit) : absl::StrCat(bit, "-", last));
    bit = last + 1;
  }
  if ((mask & (1u << 31)) != 0) parts.push_back("C");
  return parts.empty() ? "-" : absl::StrJoin(parts, ",");
}

std::string FormatTime(int64_t unix_ns) {
  if (unix_ns == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixNanos(unix_ns),
                          absl::UTCTimeZone());
}

std::string FormatShare(double share) { return absl::StrFormat("%.1f%%", share * 100); }

std::string FormatOwnership(const fleetpmu::v1::GetCounterOwnershipResponse& response) {
  TextTable table({"HOST", "PCPU", "N", "COUNTERS", "SHARE", "VM", "H", "VM-COUNTERS", "VM-SHARE"});
  for (const auto& pcpu : response.pcpus()) {
    bool first = true;
    for (const auto& vm : pcpu.vms()) {
      // The pCPU columns on its first VM's line only.
      table.AddRow({first ? pcpu.host_id() : "", first ? absl::StrCat(pcpu.pcpu()) : "",
                    first ? absl::StrCat(pcpu.num_counters()) : "",
                    first ? FormatCounterMask(pcpu.counter_mask()) : "",
                    first ? FormatShare(pcpu.resident_share()) : "", vm.vm_id(),
                    absl::StrCat(vm.guest_counters()), FormatCounterMask(vm.counter_mask()),
                    FormatShare(vm.resident_share())});
      first = false;
    }
    if (first) {
      table.AddRow({pcpu.host_id(), absl::StrCat(pcpu.pcpu()), absl::StrCat(pcpu.num_counters()),
                    FormatCounterMask(pcpu.counter_mask()), FormatShare(pcpu.resident_share())});
    }
  }
  return WithNone(table, response.pcpus_size() == 0);
}

std::string FormatHosts(const fleetpmu::v1::ListHostsResponse& response) {
  TextTable table({"HOST", "BACKEND", "ARCH", "PCPUS", "N", "EPOCH", "DURABLE-SEQ", "LAST-REPORT"});
  for (const auto& host : response.hosts()) {
    const fleetpmu::v1::HostInfo& info = host.host_info();
    std::set<uint32_t> counters;
    for (const auto& pcpu : info.pcpus()) counters.insert(pcpu.num_counters());
    table.AddRow({info.host_id(), EnumWord(fleetpmu::v1::Backend_Name(info.backend()), "BACKEND_"),
                  info.arch().empty() ? "-" : info.arch(), absl::StrCat(info.pcpus_size()),
                  counters.empty() ? "-" : absl::StrJoin(counters, ","),
                  absl::StrCat(host.agent_epoch()), absl::StrCat(host.durable_seq()),
                  FormatTime(host.last_report_unix_ns())});
  }
  return WithNone(table, response.hosts_size() == 0);
}

std::string FormatOverflows(const fleetpmu::v1::ListOverflowEventsResponse& response) {
  TextTable table({"TIME", "HOST", "PCPU", "COUNTER", "OWNER", "TENANT", "EVENT", "CLASS",
                   "LOST-REASON", "HANDLER"});
  for (const auto& item : response.events()) {
    const fleetpmu::v1::OverflowEvent& event = item.event();
    const bool guest = event.owner_kind() == fleetpmu::v1::OWNER_KIND_GUEST;
    table.AddRow(
        {FormatTime(event.time_unix_ns()), item.host_id(), absl::StrCat(event.pcpu()),
         event.counter() == 31 ? "C" : absl::StrCat(event.counter()),
         guest ? absl::StrCat(event.vm_id(), "/vcpu", event.vcpu())
               : absl::StrCat("host:", event.host_event().empty() ? "-" : event.host_event()),
         guest ? event.tenant_id() : "-", absl::StrFormat("0x%02x", event.event_code()),
         EnumWord(fleetpmu::v1::OverflowClass_Name(event.overflow_class()), "OVERFLOW_CLASS_"),
         event.overflow_class() == fleetpmu::v1::OVERFLOW_CLASS_LOST
             ? EnumWord(fleetpmu::v1::LostReason_Name(event.lost_reason()), "LOST_REASON_")
             : "-",
         event.wrap_to_handler_ns() == 0 ? "-" : absl::StrCat(event.wrap_to_handler_ns(), "ns")});
  }
  return WithNone(table, response.events_size() == 0);
}

std::string FormatLost(const fleetpmu::v1::GetLostOverflowSummaryResponse& response) {
  TextTable table({"TENANT", "HOST", "REASON", "LOST"});
  for (const auto& row : response.rows()) {
    table.AddRow({row.tenant_id().empty() ? "(host)" : row.tenant_id(), row.host_id(),
                  EnumWord(fleetpmu::v1::LostReason_Name(row.reason()), "LOST_REASON_"),
                  absl::StrCat(row.count())});
  }
  return absl::StrCat(WithNone(table, response.rows_size() == 0),
                      "total lost: ", response.total_lost(), "\n");
}

std::string FormatStats(const fleetpmu::v1::GetVcpuStatsResponse& response) {
  TextTable table({"VM", "VCPU", "HOST", "LOADS", "PUTS", "SWAPS", "SKIPPED", "TRAPPED",
                   "DELIVERED", "COALESCED", "LOST", "MISATTRIBUTED", "RUN-TIME", "FROM", "TO"});
  for (const auto& item : response.stats()) {
    const fleetpmu::v1::VcpuStats& stats = item.stats();
    table.AddRow(
        {stats.vm_id(), absl::StrCat(stats.vcpu()), item.host_id(), absl::StrCat(stats.loads()),
         absl::StrCat(stats.puts()), absl::StrCat(stats.swaps_done()),
         absl::StrCat(stats.swaps_skipped()), absl::StrCat(stats.trapped_fallbacks()),
         absl::StrCat(stats.overflows().delivered()), absl::StrCat(stats.overflows().coalesced()),
         absl::StrCat(stats.overflows().lost()), absl::StrCat(stats.misattributed()),
         Seconds(stats.run_time_ns()), FormatTime(stats.interval().start_unix_ns()),
         FormatTime(stats.interval().end_unix_ns())});
  }
  return WithNone(table, response.stats_size() == 0);
}

std::string FormatJson(const google::protobuf::Message& response) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(response, &json, options);
  if (!status.ok()) return absl::StrCat("{\"error\": \"", status.ToString(), "\"}\n");
  return json;
}

}  // namespace fleetpmu::ctl
