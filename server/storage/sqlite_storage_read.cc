// The read side of SqliteStorage: the questions of the Query API, answered from raw rows
// inside the raw retention window and from rollups before it (raw rows move into rollups in
// the same transaction that deletes them, so a reader never counts a row twice).
#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/status_macros.h"
#include "server/storage/sqlite_storage.h"
#include "server/storage/vcpu_stats_merge.h"

namespace fleetpmu::server {

using fleetpmu::v1::HostOverflowEvent;
using fleetpmu::v1::HostSummary;
using fleetpmu::v1::HostVcpuStats;
using fleetpmu::v1::PcpuOwnership;

namespace {

constexpr int64_t kGuestOwner = fleetpmu::v1::OWNER_KIND_GUEST;
constexpr int64_t kLostClass = fleetpmu::v1::OVERFLOW_CLASS_LOST;

// Runs `statement` (already bound) and calls `row` for each result row.
template <typename RowFn>
absl::Status ForEachRow(SqliteStatement& statement, RowFn row) {
  ScopedReset reset(statement);
  while (true) {
    FLEETPMU_ASSIGN_OR_RETURN(bool has_row, statement.Step());
    if (!has_row) return absl::OkStatus();
    FLEETPMU_RETURN_IF_ERROR(row(statement));
  }
}

absl::StatusOr<bool> Exists(SqliteDb& db, absl::string_view sql,
                            std::initializer_list<std::string> params) {
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * statement, db.Prepare(sql));
  ScopedReset reset(*statement);
  int index = 1;
  for (const std::string& param : params) statement->BindText(index++, param);
  return statement->Step();
}

}  // namespace

bool SqliteStorage::HasIdleReaderLocked() const { return !idle_readers_.empty(); }

SqliteStorage::Reader SqliteStorage::AcquireReader() {
  absl::MutexLock lock(&readers_mu_);
  readers_mu_.Await(absl::Condition(this, &SqliteStorage::HasIdleReaderLocked));
  std::unique_ptr<SqliteDb> db = std::move(idle_readers_.back());
  idle_readers_.pop_back();
  return Reader(this, std::move(db));
}

absl::StatusOr<bool> SqliteStorage::TenantExists(const std::string& tenant_id) {
  Reader reader = AcquireReader();
  return Exists(reader.db(), "SELECT 1 FROM tenants WHERE tenant_id = ?1", {tenant_id});
}

absl::StatusOr<bool> SqliteStorage::HostExists(const std::string& host_id) {
  Reader reader = AcquireReader();
  return Exists(reader.db(), "SELECT 1 FROM hosts WHERE host_id = ?1", {host_id});
}

absl::StatusOr<bool> SqliteStorage::TenantRanOnHost(const std::string& tenant_id,
                                                    const std::string& host_id) {
  Reader reader = AcquireReader();
  return Exists(reader.db(), "SELECT 1 FROM vms WHERE tenant_id = ?1 AND host_id = ?2 LIMIT 1",
                {tenant_id, host_id});
}

absl::StatusOr<uint64_t> SqliteStorage::DurableSeq(const std::string& host_id,
                                                   uint64_t agent_epoch) {
  Reader reader = AcquireReader();
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * statement,
      reader.db().Prepare(
          "SELECT durable_seq FROM ingest_cursors WHERE host_id = ?1 AND agent_epoch = ?2"));
  ScopedReset reset(*statement);
  statement->BindText(1, host_id).Bind(2, static_cast<int64_t>(agent_epoch));
  FLEETPMU_ASSIGN_OR_RETURN(bool row, statement->Step());
  return row ? static_cast<uint64_t>(statement->ColumnInt(0)) : 0;
}

absl::StatusOr<Page<HostSummary>> SqliteStorage::ListHosts(const std::string& tenant_id,
                                                           PageRequest page) {
  Reader reader = AcquireReader();
  const std::string sql = absl::StrCat(
      "SELECT h.host_id, h.host_info, h.last_report_unix_ns, h.agent_epoch, "
      "COALESCE(c.durable_seq, 0) FROM hosts h LEFT JOIN ingest_cursors c "
      "ON c.host_id = h.host_id AND c.agent_epoch = h.agent_epoch ",
      tenant_id.empty() ? "" : "WHERE h.host_id IN (SELECT host_id FROM vms WHERE tenant_id = ?3) ",
      "ORDER BY h.host_id LIMIT ?1 OFFSET ?2");
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * statement, reader.db().Prepare(sql));
  statement->Bind(1, int64_t{page.limit} + 1).Bind(2, page.offset);
  if (!tenant_id.empty()) statement->BindText(3, tenant_id);
  Page<HostSummary> out;
  FLEETPMU_RETURN_IF_ERROR(ForEachRow(*statement, [&](SqliteStatement& row) -> absl::Status {
    if (out.items.size() == static_cast<size_t>(page.limit)) {
      out.more = true;
      return absl::OkStatus();
    }
    HostSummary summary;
    if (!summary.mutable_host_info()->ParseFromString(row.ColumnBlob(1))) {
      return absl::DataLossError(absl::StrCat("hosts: unreadable HostInfo of ", row.ColumnText(0)));
    }
    summary.mutable_host_info()->set_host_id(row.ColumnText(0));
    summary.set_last_report_unix_ns(row.ColumnInt(2));
    summary.set_agent_epoch(static_cast<uint64_t>(row.ColumnInt(3)));
    summary.set_durable_seq(static_cast<uint64_t>(row.ColumnInt(4)));
    out.items.push_back(std::move(summary));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<PcpuOwnership>> SqliteStorage::GetCounterOwnership(
    const OwnershipQuery& query) {
  int64_t start = 0;
  int64_t end = 0;
  if (query.at_unix_ns.has_value()) {
    start = *query.at_unix_ns;
    end = *query.at_unix_ns + 1;
  } else if (query.range.has_value()) {
    start = query.range->start_unix_ns;
    end = query.range->end_unix_ns;
  } else {
    return absl::InvalidArgumentError("ownership query needs a range or an instant");
  }
  if (end <= start) {
    return absl::InvalidArgumentError(
        absl::StrCat("ownership query: end ", end, " is not after start ", start));
  }

  Reader reader = AcquireReader();
  SqliteDb& db = reader.db();
  const std::string host_filter = query.host_id.empty() ? "" : " AND host_id = ?4";
  const std::string sql = absl::StrCat(
      "SELECT host_id, pcpu, start_unix_ns, end_unix_ns, vm_id, counter_mask, resident_ns "
      "FROM ownership_intervals WHERE tenant_id = ?1",
      host_filter, " AND owner_kind = ", kGuestOwner,
      " AND start_unix_ns < ?3 AND end_unix_ns > ?2 AND resident_ns > 0 UNION ALL "
      "SELECT host_id, pcpu, bucket_start_unix_ns, bucket_end_unix_ns, vm_id, counter_mask, "
      "resident_ns FROM ownership_rollup WHERE tenant_id = ?1",
      host_filter, " AND owner_kind = ", kGuestOwner,
      " AND bucket_start_unix_ns < ?3 AND bucket_end_unix_ns > ?2 AND resident_ns > 0");
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * statement, db.Prepare(sql));
  statement->BindText(1, query.tenant_id).Bind(2, start).Bind(3, end);
  if (!query.host_id.empty()) statement->BindText(4, query.host_id);

  using Sample = std::pair<int64_t, int64_t>;  // [start, end) of a row
  struct Holder {
    uint32_t mask = 0;
    std::map<Sample, uint64_t> resident;  // resident ns per sample
  };
  struct PcpuEntry {
    Holder tenant;
    std::map<std::string, Holder> vms;
  };
  std::map<std::pair<std::string, uint32_t>, PcpuEntry> pcpus;
  FLEETPMU_RETURN_IF_ERROR(ForEachRow(*statement, [&](SqliteStatement& row) -> absl::Status {
    PcpuEntry& entry = pcpus[{row.ColumnText(0), static_cast<uint32_t>(row.ColumnInt(1))}];
    const Sample sample{row.ColumnInt(2), row.ColumnInt(3)};
    const auto mask = static_cast<uint32_t>(row.ColumnInt(5));
    const auto resident = static_cast<uint64_t>(row.ColumnInt(6));
    entry.tenant.mask |= mask;
    entry.tenant.resident[sample] += resident;
    Holder& vm = entry.vms[row.ColumnText(4)];
    vm.mask |= mask;
    vm.resident[sample] += resident;
    return absl::OkStatus();
  }));

  // Share of [start, end) held: each sample's residency is capped at its length (vCPUs of one
  // tenant cannot hold one pCPU at the same time) and counted for the part of the sample
  // inside the window.
  const bool instant = query.at_unix_ns.has_value();
  auto share = [&](const Holder& holder) {
    if (instant) return 1.0;
    double held = 0;
    for (const auto& [sample, resident_ns] : holder.resident) {
      const double length = static_cast<double>(sample.second - sample.first);
      const double overlap =
          static_cast<double>(std::min(sample.second, end) - std::max(sample.first, start));
      held += std::min(static_cast<double>(resident_ns), length) * overlap / length;
    }
    return std::clamp(held / static_cast<double>(end - start), 0.0, 1.0);
  };

  // N per pCPU and h per VM, loaded once per host.
  std::map<std::string, std::map<uint32_t, uint32_t>> counters_by_host;
  std::map<std::string, std::map<std::string, uint32_t>> h_by_host;
  auto load_host = [&](const std::string& host) -> absl::Status {
    if (counters_by_host.count(host) != 0) return absl::OkStatus();
    auto& counters = counters_by_host[host];
    auto& h = h_by_host[host];
    FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * pcpu_statement,
                              db.Prepare("SELECT p.pcpu, m.num_counters FROM pcpus p JOIN pmus m "
                                         "ON m.pmu_key = p.pmu_key WHERE p.host_id = ?1"));
    pcpu_statement->BindText(1, host);
    FLEETPMU_RETURN_IF_ERROR(ForEachRow(*pcpu_statement, [&](SqliteStatement& row) {
      counters[static_cast<uint32_t>(row.ColumnInt(0))] = static_cast<uint32_t>(row.ColumnInt(1));
      return absl::OkStatus();
    }));
    FLEETPMU_ASSIGN_OR_RETURN(
        SqliteStatement * vm_statement,
        db.Prepare("SELECT vm_id, guest_counters FROM vms WHERE host_id = ?1 AND tenant_id = ?2"));
    vm_statement->BindText(1, host).BindText(2, query.tenant_id);
    return ForEachRow(*vm_statement, [&](SqliteStatement& row) {
      h[row.ColumnText(0)] = static_cast<uint32_t>(row.ColumnInt(1));
      return absl::OkStatus();
    });
  };

  std::vector<PcpuOwnership> out;
  for (const auto& [key, entry] : pcpus) {
    const auto& [host, pcpu] = key;
    FLEETPMU_RETURN_IF_ERROR(load_host(host));
    PcpuOwnership ownership;
    ownership.set_host_id(host);
    ownership.set_pcpu(pcpu);
    const auto& counters = counters_by_host[host];
    if (auto it = counters.find(pcpu); it != counters.end()) {
      ownership.set_num_counters(it->second);
    }
    ownership.set_counter_mask(entry.tenant.mask);
    ownership.set_resident_share(share(entry.tenant));
    for (const auto& [vm_id, holder] : entry.vms) {
      fleetpmu::v1::VmCounterShare* vm = ownership.add_vms();
      vm->set_vm_id(vm_id);
      const auto& h = h_by_host[host];
      if (auto it = h.find(vm_id); it != h.end()) vm->set_guest_counters(it->second);
      vm->set_counter_mask(holder.mask);
      vm->set_resident_share(share(holder));
    }
    out.push_back(std::move(ownership));
  }
  return out;
}

absl::StatusOr<Page<HostOverflowEvent>> SqliteStorage::ListOverflowEvents(
    const OverflowQuery& query, PageRequest page) {
  Reader reader = AcquireReader();
  std::string sql =
      "SELECT host_id, time_unix_ns, pcpu, counter, owner_kind, vm_id, vcpu, tenant_id, "
      "host_event, event_code, overflow_class, lost_reason, wrap_to_handler_ns "
      "FROM overflow_events WHERE time_unix_ns >= ?3";
  if (query.lost_only) absl::StrAppend(&sql, " AND overflow_class = ", kLostClass);
  if (!query.tenant_id.empty()) absl::StrAppend(&sql, " AND tenant_id = ?4");
  if (!query.host_id.empty()) absl::StrAppend(&sql, " AND host_id = ?5");
  absl::StrAppend(&sql, " ORDER BY time_unix_ns DESC, id DESC LIMIT ?1 OFFSET ?2");
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * statement, reader.db().Prepare(sql));
  statement->Bind(1, int64_t{page.limit} + 1).Bind(2, page.offset).Bind(3, query.since_unix_ns);
  if (!query.tenant_id.empty()) statement->BindText(4, query.tenant_id);
  if (!query.host_id.empty()) statement->BindText(5, query.host_id);
  Page<HostOverflowEvent> out;
  FLEETPMU_RETURN_IF_ERROR(ForEachRow(*statement, [&](SqliteStatement& row) {
    if (out.items.size() == static_cast<size_t>(page.limit)) {
      out.more = true;
      return absl::OkStatus();
    }
    HostOverflowEvent item;
    item.set_host_id(row.ColumnText(0));
    fleetpmu::v1::OverflowEvent* event = item.mutable_event();
    event->set_time_unix_ns(row.ColumnInt(1));
    event->set_pcpu(static_cast<uint32_t>(row.ColumnInt(2)));
    event->set_counter(static_cast<uint32_t>(row.ColumnInt(3)));
    event->set_owner_kind(static_cast<fleetpmu::v1::OwnerKind>(row.ColumnInt(4)));
    event->set_vm_id(row.ColumnText(5));
    event->set_vcpu(static_cast<uint32_t>(row.ColumnInt(6)));
    event->set_tenant_id(row.ColumnText(7));
    event->set_host_event(row.ColumnText(8));
    event->set_event_code(static_cast<uint32_t>(row.ColumnInt(9)));
    event->set_overflow_class(static_cast<fleetpmu::v1::OverflowClass>(row.ColumnInt(10)));
    event->set_lost_reason(static_cast<fleetpmu::v1::LostReason>(row.ColumnInt(11)));
    event->set_wrap_to_handler_ns(static_cast<uint64_t>(row.ColumnInt(12)));
    out.items.push_back(std::move(item));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<LostSummary> SqliteStorage::GetLostOverflowSummary(const LostSummaryQuery& query,
                                                                  PageRequest page) {
  Reader reader = AcquireReader();
  std::string filter;
  if (!query.tenant_id.empty()) absl::StrAppend(&filter, " AND tenant_id = ?3");
  if (!query.host_id.empty()) absl::StrAppend(&filter, " AND host_id = ?4");
  const std::string rows = absl::StrCat(
      "SELECT tenant_id, host_id, reason, count FROM lost_overflows "
      "WHERE start_unix_ns < ?2 AND end_unix_ns > ?1",
      filter,
      " UNION ALL SELECT tenant_id, host_id, reason, count FROM lost_overflows_rollup "
      "WHERE bucket_start_unix_ns < ?2 AND bucket_end_unix_ns > ?1",
      filter);
  auto bind = [&](SqliteStatement& statement) {
    statement.Bind(1, query.range.start_unix_ns).Bind(2, query.range.end_unix_ns);
    if (!query.tenant_id.empty()) statement.BindText(3, query.tenant_id);
    if (!query.host_id.empty()) statement.BindText(4, query.host_id);
  };

  LostSummary out;
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * total,
      reader.db().Prepare(absl::StrCat("SELECT COALESCE(SUM(count), 0) FROM (", rows, ")")));
  bind(*total);
  FLEETPMU_RETURN_IF_ERROR(ForEachRow(*total, [&](SqliteStatement& row) {
    out.total_lost = static_cast<uint64_t>(row.ColumnInt(0));
    return absl::OkStatus();
  }));

  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * grouped,
      reader.db().Prepare(
          absl::StrCat("SELECT tenant_id, host_id, reason, SUM(count) AS lost FROM (", rows,
                       ") GROUP BY tenant_id, host_id, reason HAVING lost > 0 "
                       "ORDER BY tenant_id, host_id, reason LIMIT ?5 OFFSET ?6")));
  bind(*grouped);
  grouped->Bind(5, int64_t{page.limit} + 1).Bind(6, page.offset);
  FLEETPMU_RETURN_IF_ERROR(ForEachRow(*grouped, [&](SqliteStatement& row) {
    if (out.rows.size() == static_cast<size_t>(page.limit)) {
      out.more = true;
      return absl::OkStatus();
    }
    fleetpmu::v1::LostOverflowCount count;
    count.set_tenant_id(row.ColumnText(0));
    count.set_host_id(row.ColumnText(1));
    count.set_reason(static_cast<fleetpmu::v1::LostReason>(row.ColumnInt(2)));
    count.set_count(static_cast<uint64_t>(row.ColumnInt(3)));
    out.rows.push_back(std::move(count));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<Page<HostVcpuStats>> SqliteStorage::GetVcpuStats(const VcpuStatsQuery& query,
                                                                PageRequest page) {
  Reader reader = AcquireReader();
  const std::string vm_filter = query.vm_id.empty() ? "" : " AND vm_id = ?4";
  const std::string sql = absl::StrCat(
      "SELECT vm_id, vcpu, host_id, stats FROM vcpu_stats WHERE tenant_id = ?1", vm_filter,
      " AND start_unix_ns < ?3 AND end_unix_ns > ?2 UNION ALL "
      "SELECT vm_id, vcpu, host_id, stats FROM vcpu_stats_rollup WHERE tenant_id = ?1",
      vm_filter, " AND bucket_start_unix_ns < ?3 AND bucket_end_unix_ns > ?2 ORDER BY 1, 2, 3");
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * statement, reader.db().Prepare(sql));
  statement->BindText(1, query.tenant_id)
      .Bind(2, query.range.start_unix_ns)
      .Bind(3, query.range.end_unix_ns);
  if (!query.vm_id.empty()) statement->BindText(4, query.vm_id);

  Page<HostVcpuStats> out;
  // Groups of consecutive rows with the same (vm_id, vcpu, host_id); the first `offset`
  // groups are skipped without decoding their blobs.
  std::tuple<std::string, int64_t, std::string> current;
  int64_t group = -1;
  FLEETPMU_RETURN_IF_ERROR(ForEachRow(*statement, [&](SqliteStatement& row) -> absl::Status {
    auto key = std::make_tuple(row.ColumnText(0), row.ColumnInt(1), row.ColumnText(2));
    if (group < 0 || key != current) {
      ++group;
      current = std::move(key);
      if (group >= page.offset + page.limit) {
        out.more = true;
      } else if (group >= page.offset) {
        HostVcpuStats& item = out.items.emplace_back();
        item.set_host_id(std::get<2>(current));
      }
    }
    if (group < page.offset || group >= page.offset + page.limit) return absl::OkStatus();
    fleetpmu::v1::VcpuStats stats;
    if (!stats.ParseFromString(row.ColumnBlob(3))) {
      return absl::DataLossError("vcpu_stats: unreadable row");
    }
    MergeVcpuStats(stats, out.items.back().mutable_stats());
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int64_t> SqliteStorage::OldestDataUnixNs() {
  Reader reader = AcquireReader();
  return reader.db().QueryInt(
      "SELECT COALESCE(MIN(t), 0) FROM ("
      "SELECT MIN(start_unix_ns) AS t FROM vcpu_stats UNION ALL "
      "SELECT MIN(start_unix_ns) FROM ownership_intervals UNION ALL "
      "SELECT MIN(start_unix_ns) FROM lost_overflows UNION ALL "
      "SELECT MIN(time_unix_ns) FROM overflow_events UNION ALL "
      "SELECT MIN(bucket_start_unix_ns) FROM vcpu_stats_rollup UNION ALL "
      "SELECT MIN(bucket_start_unix_ns) FROM ownership_rollup UNION ALL "
      "SELECT MIN(bucket_start_unix_ns) FROM lost_overflows_rollup)");
}

}  // namespace fleetpmu::server
