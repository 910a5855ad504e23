// SPDX-License-Identifier: Apache-2.0
#include "verbs/stats_shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace tbv::verbs {

namespace {

static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free,
              "the seqlock is shared between processes: it needs lock-free 64-bit atomics");
static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);

/// Copies `v` into the mapping as 64-bit release stores: a reader that sees any of them also sees
/// the odd `seq` stored before (the seqlock's writer side without a fence).
template <typename T>
void store_words(std::byte* dst, const T& v) noexcept {
    static_assert(sizeof(T) % sizeof(std::uint64_t) == 0);
    const auto words = std::bit_cast<std::array<std::uint64_t, sizeof(T) / 8>>(v);
    auto* w = reinterpret_cast<std::uint64_t*>(dst);
    for (std::size_t i = 0; i < words.size(); ++i) {
        std::atomic_ref<std::uint64_t>(w[i]).store(words[i], std::memory_order_release);
    }
}

std::uint64_t clock_ns(clockid_t clk) noexcept {
    timespec ts{};
    ::clock_gettime(clk, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

/// Text from the file, made safe to print (it may have been written by anyone).
std::string printable(const char* s, std::size_t max) {
    std::string out(s, ::strnlen(s, max));
    for (char& c : out) {
        if (c < 0x20 || c > 0x7e) {
            c = '?';
        }
    }
    return out;
}

void put_string(char* dst, std::size_t size, std::string_view s) noexcept {
    const std::size_t n = std::min(s.size(), size - 1);
    std::memcpy(dst, s.data(), n);
    std::memset(dst + n, 0, size - n);
}

std::string process_name() {
    char buf[64] = {};
    const int fd = ::open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return {};
    }
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    std::string s(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) {
        s.pop_back();
    }
    return s;
}

/// pread of exactly `len` bytes (a short read means the file shrank: not a stats file).
bool pread_exact(int fd, void* dst, std::size_t len, std::size_t off) noexcept {
    auto* p = static_cast<std::byte*>(dst);
    while (len > 0) {
        const ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        const auto k = static_cast<std::size_t>(n);
        p += k;
        len -= k;
        off += k;
    }
    return true;
}

class Fd {
public:
    explicit Fd(int fd) noexcept : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const noexcept { return fd_; }

private:
    int fd_;
};

/// The parts of a header that never change, checked against this build and the file's size.
Result<void> check_layout(const StatsHeader& h, std::uint64_t file_size) {
    if (h.magic != kStatsMagic) {
        return fail(Errc::malformed);
    }
    if (h.version != kStatsVersion) {
        return fail(std::errc::protocol_not_supported);
    }
    if (h.header_size != sizeof(StatsHeader) || h.port_record_size != sizeof(PortRecord) ||
        h.qp_record_size != sizeof(QpRecord) || h.port_capacity > kStatsMaxPorts ||
        h.qp_capacity > kStatsMaxQps || h.drop_reasons > kStatsMaxDropReasons || h.lid > 0xFFFF) {
        return fail(Errc::malformed);
    }
    if (file_size < stats_file_size(h.port_capacity, h.qp_capacity)) {
        return fail(Errc::malformed);
    }
    return ok();
}

}  // namespace

// ---- records -----------------------------------------------------------------------------------

PortRecord to_record(const PortStats& p) noexcept {
    PortRecord r{};
    r.id = p.id;
    r.adapter = p.adapter;
    r.peer_lid = p.peer_lid;
    r.data_credits = p.data_credits;
    const auto& c = p.counters;
    r.tx_frames = c.tx_frames;
    r.tx_bytes = c.tx_bytes;
    r.rx_frames = c.rx_frames;
    r.rx_bytes = c.rx_bytes;
    r.credit_stalls = c.credit_stalls;
    r.credit_frames = c.credit_frames;
    r.doorbells = c.doorbells;
    r.credit_probes = c.credit_probes;
    for (std::size_t i = 0; i < c.drops.size(); ++i) {
        r.drops[i] = c.drops[i];
    }
    return r;
}

QpRecord to_record(const QpStats& q) noexcept {
    QpRecord r{};
    r.qpn = q.qpn;
    r.type = static_cast<std::uint8_t>(q.type);
    r.state = static_cast<std::uint8_t>(q.state);
    r.dlid = q.dlid;
    r.dest_qpn = q.dest_qpn;
    const auto& c = q.counters;
    r.tx_frames = c.tx_frames;
    r.rx_frames = c.rx_frames;
    r.tx_bytes = c.tx_bytes;
    r.rx_bytes = c.rx_bytes;
    r.no_route = c.no_route;
    r.remote_access_faults = c.remote_access_faults;
    r.wrong_peer = c.wrong_peer;
    r.dropped = c.dropped;
    r.replays = c.replays;
    r.uc_dropped_messages = c.uc_dropped_messages;
    r.qkey_drops = c.qkey_drops;
    const auto& s = q.sender;
    r.snd_frames_sent = s.frames_sent;
    r.snd_retransmits = s.retransmits;
    r.snd_timeouts = s.timeouts;
    r.snd_naks = s.naks;
    r.snd_rnr_naks = s.rnr_naks;
    r.snd_rtt_samples = s.rtt_samples;
    r.snd_bogus_acks = s.bogus_acks;
    const auto& v = q.receiver;
    r.rcv_accepted = v.accepted;
    r.rcv_out_of_order = v.out_of_order;
    r.rcv_duplicates = v.duplicates;
    r.rcv_dropped = v.dropped;
    r.rcv_naks = v.naks;
    r.rcv_rnr_naks = v.rnr_naks;
    r.rcv_acks = v.acks;
    return r;
}

// ---- names -------------------------------------------------------------------------------------

std::string stats_dir() {
    const char* d = std::getenv("TBV_STATS_DIR");
    return d != nullptr && d[0] != '\0' ? std::string(d) : std::string("/dev/shm");
}

std::string stats_file_name(std::uint32_t pid, std::uint16_t lid) {
    return std::string(kStatsPrefix) + std::to_string(pid) + "-" + std::to_string(lid);
}

std::optional<StatsFileName> parse_stats_file_name(std::string_view name) noexcept {
    if (name.substr(0, kStatsPrefix.size()) != kStatsPrefix) {
        return std::nullopt;
    }
    name.remove_prefix(kStatsPrefix.size());
    // A decimal number without sign or leading zeros, at most `max`.
    const auto number = [&name](std::uint64_t max, std::uint64_t& out) {
        std::size_t n = 0;
        out = 0;
        while (n < name.size() && name[n] >= '0' && name[n] <= '9' && n < 10) {
            out = out * 10 + static_cast<std::uint64_t>(name[n] - '0');
            ++n;
        }
        const bool good = n > 0 && (n == 1 || name[0] != '0') && out <= max &&
                          (n == name.size() || name[n] < '0' || name[n] > '9');
        name.remove_prefix(n);
        return good;
    };
    std::uint64_t p = 0;
    std::uint64_t l = 0;
    if (!number(0xFFFF'FFFF, p) || p == 0 || name.empty() || name[0] != '-') {
        return std::nullopt;
    }
    name.remove_prefix(1);
    if (!number(0xFFFF, l) || !name.empty()) {
        return std::nullopt;
    }
    return StatsFileName{static_cast<std::uint32_t>(p), static_cast<std::uint16_t>(l)};
}

std::uint64_t stats_mono_now_ns() noexcept {
    return clock_ns(CLOCK_MONOTONIC);
}

// ---- publisher ---------------------------------------------------------------------------------

Result<std::unique_ptr<StatsPublisher>> StatsPublisher::create(const StatsIdentity& id,
                                                               const std::string& dir,
                                                               std::uint32_t max_qps) {
    std::unique_ptr<StatsPublisher> p(new StatsPublisher());
    p->owner_pid_ = static_cast<std::uint32_t>(::getpid());
    p->path_ = dir + "/" + stats_file_name(id.pid, id.lid);
    p->qp_capacity_ = std::min(max_qps, kStatsMaxQps);
    p->size_ = stats_file_size(kStatsMaxPorts, p->qp_capacity_);
    // O_EXCL + O_NOFOLLOW: never write through a name someone else planted in the shared
    // directory. A file of ours by this name is left by a dead process whose pid we now have.
    constexpr int kFlags = O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
    p->fd_ = ::open(p->path_.c_str(), kFlags, 0644);
    if (p->fd_ < 0 && errno == EEXIST && ::unlink(p->path_.c_str()) == 0) {
        p->fd_ = ::open(p->path_.c_str(), kFlags, 0644);
    }
    if (p->fd_ < 0) {
        return fail_errno(errno);
    }
    // From here the destructor closes and unlinks.
    if (::ftruncate(p->fd_, static_cast<off_t>(p->size_)) != 0) {
        return fail_errno(errno);
    }
    void* m = ::mmap(nullptr, p->size_, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd_, 0);
    if (m == MAP_FAILED) {
        return fail_errno(errno);
    }
    p->map_ = static_cast<std::byte*>(m);

    StatsHeader h{};
    h.version = kStatsVersion;
    h.header_size = sizeof(StatsHeader);
    h.port_record_size = sizeof(PortRecord);
    h.qp_record_size = sizeof(QpRecord);
    h.port_capacity = kStatsMaxPorts;
    h.qp_capacity = p->qp_capacity_;
    h.drop_reasons = static_cast<std::uint32_t>(transport::DropReason::count_);
    h.pid = id.pid;
    h.lid = id.lid;
    std::copy(id.uuid.begin(), id.uuid.end(), h.uuid);
    h.started_unix_ns = clock_ns(CLOCK_REALTIME);
    put_string(h.process, sizeof h.process, id.process);
    put_string(h.device, sizeof h.device, id.device);
    // Everything but the magic, then the magic: a reader sees a complete header or none.
    std::memcpy(p->map_ + sizeof h.magic, reinterpret_cast<const std::byte*>(&h) + sizeof h.magic,
                sizeof h - sizeof h.magic);
    std::atomic_ref<std::uint64_t>(reinterpret_cast<StatsHeader*>(p->map_)->magic)
        .store(kStatsMagic, std::memory_order_release);
    return p;
}

std::unique_ptr<StatsPublisher> StatsPublisher::start(Context& c,
                                                      std::string_view device) noexcept {
    try {
        if (const char* e = std::getenv("TBV_STATS"); e != nullptr && std::string_view(e) == "0") {
            return nullptr;
        }
        StatsIdentity id;
        id.pid = static_cast<std::uint32_t>(::getpid());
        id.lid = c.lid();
        id.uuid = c.uuid();
        id.process = process_name();
        id.device = std::string(device);
        auto p = create(id, stats_dir(), c.limits().max_qp);
        if (!p) {
            return nullptr;
        }
        return std::move(*p);
    } catch (...) {
        return nullptr;  // out of memory: no stats, nothing else lost
    }
}

StatsPublisher::~StatsPublisher() {
    if (map_ != nullptr) {
        ::munmap(map_, size_);
    }
    if (fd_ >= 0) {
        // Remove the name only while it still is our file (another Context may have taken it),
        // and not from a forked child, whose parent still publishes there.
        struct stat mine {};
        struct stat named {};
        if (static_cast<std::uint32_t>(::getpid()) == owner_pid_ && ::fstat(fd_, &mine) == 0 &&
            ::lstat(path_.c_str(), &named) == 0 && mine.st_dev == named.st_dev &&
            mine.st_ino == named.st_ino) {
            ::unlink(path_.c_str());
        }
        ::close(fd_);
    }
}

void StatsPublisher::publish(std::span<const PortStats> ports,
                             std::span<const QpStats> qps) noexcept {
    auto* h = reinterpret_cast<StatsHeader*>(map_);
    const auto n_ports =
        static_cast<std::uint32_t>(std::min<std::size_t>(ports.size(), kStatsMaxPorts));
    const auto n_qps = static_cast<std::uint32_t>(std::min<std::size_t>(qps.size(), qp_capacity_));
    std::atomic_ref<std::uint64_t>(h->seq).store(++seq_, std::memory_order_relaxed);  // odd
    std::byte* rec = map_ + sizeof(StatsHeader);
    for (std::uint32_t i = 0; i < n_ports; ++i) {
        store_words(rec + std::size_t{i} * sizeof(PortRecord), to_record(ports[i]));
    }
    rec = map_ + stats_file_size(kStatsMaxPorts, 0);
    for (std::uint32_t i = 0; i < n_qps; ++i) {
        store_words(rec + std::size_t{i} * sizeof(QpRecord), to_record(qps[i]));
    }
    constexpr auto rel = std::memory_order_release;
    std::atomic_ref<std::uint64_t>(h->updated_mono_ns).store(stats_mono_now_ns(), rel);
    std::atomic_ref<std::uint64_t>(h->updates).store(++updates_, rel);
    std::atomic_ref<std::uint32_t>(h->n_ports).store(n_ports, rel);
    std::atomic_ref<std::uint32_t>(h->n_qps).store(n_qps, rel);
    std::atomic_ref<std::uint32_t>(h->total_ports)
        .store(static_cast<std::uint32_t>(std::min<std::size_t>(ports.size(), 0xFFFF'FFFF)), rel);
    std::atomic_ref<std::uint32_t>(h->total_qps)
        .store(static_cast<std::uint32_t>(std::min<std::size_t>(qps.size(), 0xFFFF'FFFF)), rel);
    std::atomic_ref<std::uint64_t>(h->seq).store(++seq_, rel);  // even: consistent again
}

void StatsPublisher::tick(Context& c) noexcept {
    const auto now = std::chrono::steady_clock::now();
    if (published_ && now - last_ < kStatsPeriod) {
        return;
    }
    last_ = now;
    published_ = true;
    try {
        c.snapshot(ports_, qps_);  // allocates only while the vectors still grow
    } catch (...) {
        return;  // out of memory: this snapshot is skipped
    }
    publish(ports_, qps_);
}

// ---- reader ------------------------------------------------------------------------------------

Result<StatsFile> read_stats(const std::string& path, unsigned attempts) {
    const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (fd.get() < 0) {
        return fail_errno(errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return fail_errno(errno);
    }
    if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) < sizeof(StatsHeader)) {
        return fail(Errc::malformed);
    }
    const auto file_size = static_cast<std::uint64_t>(st.st_size);
    StatsFile out;
    StatsHeader h{};
    for (unsigned i = 0; i < std::max(attempts, 1u); ++i) {
        if (i > 0) {
            // The publisher holds the seqlock for microseconds; give it the CPU.
            if (i < 4) {
                std::this_thread::yield();
            } else {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        }
        // Seqlock read: seq, then everything, then seq again (three system calls, in order).
        std::uint64_t seq1 = 0;
        std::uint64_t seq2 = 0;
        if (!pread_exact(fd.get(), &seq1, sizeof seq1, offsetof(StatsHeader, seq)) ||
            !pread_exact(fd.get(), &h, sizeof h, 0)) {
            return fail(Errc::malformed);
        }
        if (auto r = check_layout(h, file_size); !r) {
            return Failure{r.error()};
        }
        if ((seq1 & 1) != 0) {
            continue;  // being written
        }
        // Counts are trusted only once the snapshot proves consistent; until then they only
        // have to fit the file.
        const bool counts_ok = h.n_ports <= h.port_capacity && h.n_qps <= h.qp_capacity &&
                               h.total_ports >= h.n_ports && h.total_qps >= h.n_qps;
        if (counts_ok) {
            out.ports.resize(h.n_ports);
            out.qps.resize(h.n_qps);
            if (!pread_exact(fd.get(), out.ports.data(), out.ports.size() * sizeof(PortRecord),
                             sizeof(StatsHeader)) ||
                !pread_exact(fd.get(), out.qps.data(), out.qps.size() * sizeof(QpRecord),
                             stats_file_size(h.port_capacity, 0))) {
                return fail(Errc::malformed);
            }
        }
        if (!pread_exact(fd.get(), &seq2, sizeof seq2, offsetof(StatsHeader, seq))) {
            return fail(Errc::malformed);
        }
        if (seq2 != seq1 || h.seq != seq1) {
            continue;  // torn: the publisher wrote meanwhile
        }
        if (!counts_ok) {
            return fail(Errc::malformed);  // consistent, and still nonsense
        }
        out.pid = h.pid;
        out.lid = static_cast<std::uint16_t>(h.lid);
        std::copy(std::begin(h.uuid), std::end(h.uuid), out.uuid.begin());
        out.process = printable(h.process, sizeof h.process);
        out.device = printable(h.device, sizeof h.device);
        out.started_unix_ns = h.started_unix_ns;
        out.updated_mono_ns = h.updated_mono_ns;
        out.updates = h.updates;
        out.total_ports = h.total_ports;
        out.total_qps = h.total_qps;
        out.drop_reasons = h.drop_reasons;
        return out;
    }
    return fail(std::errc::resource_unavailable_try_again);
}

}  // namespace tbv::verbs
