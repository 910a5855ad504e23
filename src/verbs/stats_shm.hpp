// SPDX-License-Identifier: Apache-2.0
// Counters for other processes: every Context publishes its ports' and QPs' counters (the
// numbers of Context::snapshot) about every 200 ms into a shared-memory file
// `<dir>/tbverbs-stats-<pid>-<lid>` (dir: TBV_STATS_DIR, default /dev/shm), which `tbv status`
// reads. The file is removed when the Context closes; one left by a crashed process is skipped
// (and cleaned up) by the reader. What each counter means: docs/counters.md.
//
// Layout (version kStatsVersion, native byte order, nothing but fixed-width integers): a 256-byte
// StatsHeader, then port_capacity PortRecords, then qp_capacity QpRecords; the first n_ports and
// n_qps records hold the snapshot. Drop reasons are stored by index in transport::DropReason
// order, without names. Any change to a record or to the header's meaning bumps kStatsVersion;
// a reader refuses every other version.
//
// Consistency: the header's `seq` is a seqlock. The publisher (a single writer: the CM thread)
// makes it odd, stores the snapshot with release stores, and makes it even again; a reader copies
// the header and records and accepts them only when `seq` was even and unchanged around the copy
// (it retries otherwise). The reader uses pread(), never a mapping, so a file truncated under it
// cannot fault it, and checks every size and count against the file before using it: the file
// is as untrusted as a frame from the wire.
//
// The file is created 0644: like the counters of an RDMA device in sysfs, anyone on the machine
// may read them (they hold no addresses, keys or data).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "hw/usb4_regs.hpp"
#include "tbv/result.hpp"
#include "transport/rail_io.hpp"
#include "verbs/context.hpp"

namespace tbv::verbs {

inline constexpr std::uint64_t kStatsMagic = 0x3154'4154'5356'4254ull;  // "TBVSTAT1" (LE bytes)
inline constexpr std::uint32_t kStatsVersion = 1;
inline constexpr std::uint32_t kStatsMaxPorts = 64;
inline constexpr std::uint32_t kStatsMaxQps = 1024;
inline constexpr std::uint32_t kStatsMaxDropReasons = 16;
inline constexpr std::chrono::milliseconds kStatsPeriod{200};
inline constexpr std::string_view kStatsPrefix = "tbverbs-stats-";

static_assert(static_cast<std::size_t>(transport::DropReason::count_) <= kStatsMaxDropReasons);

/// Start of the file. Fields above `seq` are written once, before `magic`; the rest belong to
/// the snapshot and change only inside the seqlock.
struct StatsHeader {
    std::uint64_t magic;             ///< kStatsMagic; 0 until the header is complete
    std::uint32_t version;           ///< kStatsVersion
    std::uint32_t header_size;       ///< sizeof(StatsHeader)
    std::uint32_t port_record_size;  ///< sizeof(PortRecord)
    std::uint32_t qp_record_size;    ///< sizeof(QpRecord)
    std::uint32_t port_capacity;     ///< PortRecords in the file (≤ kStatsMaxPorts)
    std::uint32_t qp_capacity;       ///< QpRecords in the file (≤ kStatsMaxQps)
    std::uint32_t drop_reasons;  ///< DropReason values the writer knows (≤ kStatsMaxDropReasons)
    std::uint32_t pid;
    std::uint32_t lid;
    std::uint32_t uuid[4];  ///< router UUID (GID), as hw::usb4::UuidDwords
    std::uint32_t reserved0;
    std::uint64_t started_unix_ns;  ///< CLOCK_REALTIME when the Context opened
    char process[16];               ///< the process's name (comm), NUL-padded
    char device[48];                ///< the device's name, NUL-padded (may be cut)
    // ---- the snapshot (seqlock) ----
    std::uint64_t seq;              ///< odd while the publisher writes
    std::uint64_t updated_mono_ns;  ///< CLOCK_MONOTONIC of the snapshot
    std::uint64_t updates;          ///< snapshots published so far
    std::uint32_t n_ports;          ///< valid PortRecords
    std::uint32_t n_qps;            ///< valid QpRecords
    std::uint32_t total_ports;      ///< ports the Context had (more than n_ports: cut to capacity)
    std::uint32_t total_qps;        ///< QPs the Context had
    std::uint64_t reserved1[10];
};

/// One port (rail or loopback): PortStats flattened.
struct PortRecord {
    std::uint32_t id;
    std::uint32_t adapter;  ///< lane adapter of the link; 0 for loopback
    std::uint32_t peer_lid;
    std::uint32_t data_credits;
    std::uint64_t tx_frames;
    std::uint64_t tx_bytes;
    std::uint64_t rx_frames;
    std::uint64_t rx_bytes;
    std::uint64_t credit_stalls;
    std::uint64_t credit_frames;
    std::uint64_t doorbells;
    std::uint64_t credit_probes;  ///< was reserved (0) before it was counted: same layout
    std::uint64_t drops[kStatsMaxDropReasons];  ///< by transport::DropReason index
};

/// One QP: QpStats flattened (QpCounters, then the RC sender's and receiver's counters).
struct QpRecord {
    std::uint32_t qpn;
    std::uint8_t type;   ///< QpType value
    std::uint8_t state;  ///< QpState value
    std::uint16_t reserved0;
    std::uint32_t dlid;
    std::uint32_t dest_qpn;
    // QpCounters
    std::uint64_t tx_frames;
    std::uint64_t rx_frames;
    std::uint64_t tx_bytes;
    std::uint64_t rx_bytes;
    std::uint64_t no_route;
    std::uint64_t remote_access_faults;
    std::uint64_t wrong_peer;
    std::uint64_t dropped;
    std::uint64_t replays;
    std::uint64_t uc_dropped_messages;
    std::uint64_t qkey_drops;
    // transport::Sender::Counters (RC requester)
    std::uint64_t snd_frames_sent;
    std::uint64_t snd_retransmits;
    std::uint64_t snd_timeouts;
    std::uint64_t snd_naks;  ///< NAKs received
    std::uint64_t snd_rnr_naks;
    std::uint64_t snd_rtt_samples;
    std::uint64_t snd_bogus_acks;
    // transport::Receiver::Counters (RC responder)
    std::uint64_t rcv_accepted;
    std::uint64_t rcv_out_of_order;
    std::uint64_t rcv_duplicates;
    std::uint64_t rcv_dropped;
    std::uint64_t rcv_naks;  ///< NAKs sent
    std::uint64_t rcv_rnr_naks;
    std::uint64_t rcv_acks;
};

// The layout is an interface between builds: pin it.
static_assert(std::is_standard_layout_v<StatsHeader> && std::is_trivially_copyable_v<StatsHeader>);
static_assert(std::is_standard_layout_v<PortRecord> && std::is_trivially_copyable_v<PortRecord>);
static_assert(std::is_standard_layout_v<QpRecord> && std::is_trivially_copyable_v<QpRecord>);
static_assert(sizeof(StatsHeader) == 256);
static_assert(offsetof(StatsHeader, pid) == 36 && offsetof(StatsHeader, started_unix_ns) == 64);
static_assert(offsetof(StatsHeader, seq) == 136 && offsetof(StatsHeader, n_ports) == 160);
static_assert(sizeof(PortRecord) == 208 && offsetof(PortRecord, drops) == 80);
static_assert(sizeof(QpRecord) == 216 && offsetof(QpRecord, snd_frames_sent) == 104);
static_assert(offsetof(QpRecord, rcv_accepted) == 160);

/// Size of a file with these capacities.
constexpr std::size_t stats_file_size(std::uint32_t ports, std::uint32_t qps) noexcept {
    return sizeof(StatsHeader) + std::size_t{ports} * sizeof(PortRecord) +
           std::size_t{qps} * sizeof(QpRecord);
}

PortRecord to_record(const PortStats& p) noexcept;
QpRecord to_record(const QpStats& q) noexcept;

/// Where stats files live: TBV_STATS_DIR, or /dev/shm.
std::string stats_dir();
/// `tbverbs-stats-<pid>-<lid>`.
std::string stats_file_name(std::uint32_t pid, std::uint16_t lid);
struct StatsFileName {
    std::uint32_t pid = 0;
    std::uint16_t lid = 0;
};
/// Parses a file name made by stats_file_name(); nothing for any other name.
std::optional<StatsFileName> parse_stats_file_name(std::string_view name) noexcept;

/// Who publishes (written once into the header).
struct StatsIdentity {
    std::uint32_t pid = 0;
    std::uint16_t lid = 0;
    hw::usb4::UuidDwords uuid{};
    std::string process;  ///< cut to 15 bytes
    std::string device;   ///< cut to 47 bytes
};

/// The writing side: one per Context, driven by its CM thread.
class StatsPublisher {
public:
    /// Creates `<dir>/tbverbs-stats-<pid>-<lid>` (replacing a stale file of that name) with room
    /// for `max_qps` QPs (≤ kStatsMaxQps) and kStatsMaxPorts ports, and maps it.
    static Result<std::unique_ptr<StatsPublisher>> create(const StatsIdentity& id,
                                                          const std::string& dir,
                                                          std::uint32_t max_qps = kStatsMaxQps);
    /// For Context::open: nullptr when TBV_STATS=0 or the file cannot be made (stats are
    /// optional; nothing else depends on them).
    static std::unique_ptr<StatsPublisher> start(Context& c, std::string_view device) noexcept;
    /// Unmaps and removes the file (unless a forked child or another publisher owns it now).
    ~StatsPublisher();
    StatsPublisher(const StatsPublisher&) = delete;
    StatsPublisher& operator=(const StatsPublisher&) = delete;

    const std::string& path() const noexcept { return path_; }
    /// Writes one snapshot (records beyond the capacities are left out; totals say so).
    void publish(std::span<const PortStats> ports, std::span<const QpStats> qps) noexcept;
    /// CM thread, no lock held: publishes when kStatsPeriod passed since the last time (the first
    /// call publishes). Reuses its vectors, so a steady state allocates nothing.
    void tick(Context& c) noexcept;

private:
    StatsPublisher() = default;
    std::string path_;
    std::uint32_t owner_pid_ = 0;  ///< the process that made the file (and may remove it)
    int fd_ = -1;
    std::byte* map_ = nullptr;
    std::size_t size_ = 0;
    std::uint32_t qp_capacity_ = 0;
    std::uint64_t seq_ = 0;
    std::uint64_t updates_ = 0;
    std::chrono::steady_clock::time_point last_{};
    bool published_ = false;
    std::vector<PortStats> ports_;
    std::vector<QpStats> qps_;
};

/// What read_stats() found: the header's fields and the valid records.
struct StatsFile {
    std::uint32_t pid = 0;
    std::uint16_t lid = 0;
    hw::usb4::UuidDwords uuid{};
    std::string process;
    std::string device;
    std::uint64_t started_unix_ns = 0;
    std::uint64_t updated_mono_ns = 0;
    std::uint64_t updates = 0;
    std::uint32_t total_ports = 0;
    std::uint32_t total_qps = 0;
    std::uint32_t drop_reasons = 0;  ///< valid entries of PortRecord::drops
    std::vector<PortRecord> ports;
    std::vector<QpRecord> qps;
};

/// Reads and validates a stats file: size, magic, version, record sizes, capacities, counts, and
/// a consistent snapshot (retried up to `attempts` times while the publisher writes; then EAGAIN).
/// Errors: ENOENT etc. from open; Errc::malformed for anything that is not a version-1 stats file
/// (short, wrong magic, wrong sizes, counts beyond capacity); EPROTONOSUPPORT for another version.
Result<StatsFile> read_stats(const std::string& path, unsigned attempts = 100);

/// CLOCK_MONOTONIC now, in ns (what updated_mono_ns is compared with).
std::uint64_t stats_mono_now_ns() noexcept;

}  // namespace tbv::verbs
