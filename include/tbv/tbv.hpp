// SPDX-License-Identifier: Apache-2.0
// The embedding API: RDMA over USB4 for C++ applications that do not go through libibverbs.
//
//   auto dev = tbv::Device::open("emu:mycable/a");        // or a VFIO PCI address "0000:c3:00.5"
//   auto cq  = (*dev)->create_cq(256);
//   auto qp  = (*dev)->create_qp(**cq);
//   auto mr  = (*dev)->reg_mr(buf, len, tbv::kAccessLocalWrite | tbv::kAccessRemoteWrite);
//   send (*qp)->local_address().to_bytes() to the peer, receive its blob, then
//   (*qp)->connect(*tbv::Address::from_bytes(blob));      // INIT → RTR → RTS
//   (*qp)->post_write(**mr, buf, len, peer_buffer, 1);   // and post_read / post_send / post_recv
//   (*cq)->poll(wcs);                                     // completions, and progress
//
// Progress. Nothing moves data behind the application's back: polling a Cq (or calling
// Device::progress) runs the device — receives frames, places incoming WRITEs, answers READs,
// sends ACKs and retransmits. A process that is only the target of WRITEs or READs must still call
// one of them while the peer is working. Only the connection manager (cables coming and going,
// discovery) has a thread of its own, which sleeps between rounds.
//
// Threads. Each call may come from any thread; a Device serialises them with one lock. Errors of
// set-up calls come as tbv::Result (include/tbv/result.hpp); the data path (post_*, poll) never
// allocates or throws. docs/embedding.md has the whole walk-through and an example program.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "tbv/result.hpp"
#include "tbv/verbs_types.hpp"

namespace tbv {

namespace verbs {  // the implementation (src/verbs, src/api); opaque here
class Mr;
class Cq;
class Qp;
}  // namespace verbs
namespace detail {
struct DeviceImpl;
}  // namespace detail

using verbs::kAccessLocalWrite;
using verbs::kAccessRemoteAtomic;
using verbs::kAccessRemoteRead;
using verbs::kAccessRemoteWrite;
using verbs::kSendInline;
using verbs::kSendSignaled;
using Wc = verbs::Wc;
using WcStatus = verbs::WcStatus;
using WcOpcode = verbs::WcOpcode;

/// Everything a peer needs to connect a QP to ours: a fixed-size, versioned blob that travels over
/// whatever out-of-band channel the application has (socket, file, MPI). Serialised little-endian:
/// magic "TBVA" (u32), version (u16), LID (u16), QPN (u32), PSN (u32), GID (16 bytes) = 32 bytes.
struct Address {
    static constexpr std::uint32_t kMagic = 0x41564254;  ///< "TBVA" as bytes on the wire
    static constexpr std::uint16_t kVersion = 1;
    static constexpr std::size_t kSize = 32;
    using Bytes = std::array<std::byte, kSize>;

    std::uint16_t lid = 0;  ///< the device's LID (derived from its router UUID)
    std::uint32_t qpn = 0;  ///< the QP number (24 bits)
    std::uint32_t psn = 0;  ///< the first PSN this QP sends (24 bits)
    verbs::Gid gid{};       ///< the device's router UUID; connect() checks it matches the LID

    /// The wire form of this address.
    Bytes to_bytes() const noexcept;
    /// Parses a blob made by to_bytes(). Errc::malformed for a wrong size, magic or version, or
    /// fields out of range (LID 0, QPN or PSN beyond 24 bits).
    static Result<Address> from_bytes(std::span<const std::byte> bytes) noexcept;
    friend bool operator==(const Address&, const Address&) = default;
};

/// Where a peer's registered memory is: what a peer sends so that we can WRITE to or READ from it.
struct RemoteBuffer {
    std::uint64_t addr = 0;    ///< peer's virtual address of the first byte
    std::uint32_t rkey = 0;    ///< the peer MR's remote key
    std::uint64_t length = 0;  ///< bytes from addr that the MR covers (informational)

    /// The same buffer `offset` bytes further on.
    RemoteBuffer at(std::uint64_t offset) const noexcept {
        return {addr + offset, rkey, offset <= length ? length - offset : 0};
    }
};

/// Settings of Qp::connect. The defaults suit a direct cable; they are the values perftest uses.
struct ConnectOptions {
    std::uint8_t timeout = 14;        ///< local ACK timeout, 4.096 µs · 2^timeout (14: ~67 ms)
    std::uint8_t retry_cnt = 7;       ///< retransmissions before IBV_WC_RETRY_EXC_ERR
    std::uint8_t rnr_retry = 7;       ///< receiver-not-ready retries (7: forever)
    std::uint8_t max_rd_atomic = 16;  ///< READs/atomics in flight, both as initiator and target
    std::uint8_t min_rnr_timer = 12;  ///< RNR NAK delay we ask of the peer (12: 0.64 ms)
    verbs::Mtu mtu = verbs::Mtu::mtu4096;
    /// What the peer may do to memory through this QP (each MR must allow it as well).
    std::uint32_t access = kAccessRemoteWrite | kAccessRemoteRead | kAccessRemoteAtomic;
};

/// Queue sizes of a new QP (ibv_qp_cap). The defaults fit a latency or bandwidth test.
struct QpOptions {
    std::uint32_t max_send_wr = 256;
    std::uint32_t max_recv_wr = 256;
    std::uint32_t max_send_sge = 4;
    std::uint32_t max_recv_sge = 4;
    std::uint32_t max_inline_data = 256;
    bool sq_sig_all = false;  ///< every send WR completes (as if kSendSignaled were set)
};

class Device;

/// A registered memory region: [addr, addr+length) pinned and mapped for the device.
/// Destroying it deregisters. While the device still uses the memory (a work request on it not
/// yet completed) the destructor runs the device's progress until it is released, for up to 2 s;
/// past that the registration stays until the Device closes and the memory must stay valid until
/// then. Destroy MRs after the work using them completed.
class Mr {
public:
    ~Mr();
    Mr(const Mr&) = delete;
    Mr& operator=(const Mr&) = delete;

    void* addr() const noexcept;          ///< first byte
    std::size_t length() const noexcept;  ///< bytes registered
    std::uint32_t lkey() const noexcept;  ///< local key (for verbs::Sge)
    std::uint32_t rkey() const noexcept;  ///< remote key (what a peer needs)
    /// This MR as a peer sees it, to be sent to the peer (addr, rkey, length).
    RemoteBuffer remote() const noexcept;

private:
    friend class Device;
    friend class Qp;
    Mr() = default;
    std::shared_ptr<detail::DeviceImpl> dev_;  ///< keeps the device open while this object lives
    verbs::Mr* mr_ = nullptr;
};

/// A completion queue. Polling it drives the whole device's progress (see the top of this file).
class Cq {
public:
    ~Cq();
    Cq(const Cq&) = delete;
    Cq& operator=(const Cq&) = delete;

    /// Runs one round of progress, then moves up to out.size() completions into `out`, oldest
    /// first; returns how many. Never blocks.
    std::uint32_t poll(std::span<Wc> out) noexcept;
    /// Polls until one completion arrives or `timeout` passes (Errc::timeout). Spins, yielding the
    /// CPU between empty polls: for examples, tests and set-up code rather than the hot path.
    Result<Wc> wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) noexcept;
    /// Entries the CQ holds (at least what create_cq asked for).
    std::uint32_t capacity() const noexcept;

private:
    friend class Device;
    Cq() = default;
    std::shared_ptr<detail::DeviceImpl> dev_;
    verbs::Cq* cq_ = nullptr;
};

/// A reliable-connected queue pair. Created in RESET; connect() makes it ready to send.
class Qp {
public:
    ~Qp();
    Qp(const Qp&) = delete;
    Qp& operator=(const Qp&) = delete;

    std::uint32_t qpn() const noexcept;
    /// What the peer passes to its connect() (our LID, QPN, first PSN and GID). Stable for the QP.
    Address local_address() const noexcept;
    /// INIT → RTR → RTS towards `peer`. EINVAL if the QP is not in RESET (connect once);
    /// Errc::malformed if the address is inconsistent (its GID does not give its LID). The peer
    /// need not be reachable yet: frames wait and are retried (timeout and retry_cnt apply).
    Result<void> connect(const Address& peer, const ConnectOptions& options = {});

    /// RDMA WRITE of [addr, addr+len) (inside `mr`) to `dst`. Signaled unless `flags` says
    /// otherwise (kSendSignaled | kSendInline …, as in ibv_send_wr::send_flags).
    Result<void> post_write(const Mr& mr, const void* addr, std::uint32_t len, RemoteBuffer dst,
                            std::uint64_t wr_id = 0, std::uint32_t flags = kSendSignaled) noexcept;
    /// RDMA READ of `len` bytes at `src` into [addr, addr+len) (inside `mr`, local write access).
    Result<void> post_read(const Mr& mr, void* addr, std::uint32_t len, RemoteBuffer src,
                           std::uint64_t wr_id = 0, std::uint32_t flags = kSendSignaled) noexcept;
    /// SEND of [addr, addr+len) into the peer's next posted receive.
    Result<void> post_send(const Mr& mr, const void* addr, std::uint32_t len,
                           std::uint64_t wr_id = 0, std::uint32_t flags = kSendSignaled) noexcept;
    /// A receive buffer [addr, addr+len) (inside `mr`, local write access) for one incoming SEND.
    Result<void> post_recv(const Mr& mr, void* addr, std::uint32_t len,
                           std::uint64_t wr_id = 0) noexcept;
    /// Any work request chain (immediates, atomics, several SGEs), as ibv_post_send. On failure
    /// `*bad` (if given) names the first request not posted.
    Result<void> post(const verbs::SendWr& wr, const verbs::SendWr** bad = nullptr) noexcept;
    /// Any receive request chain, as ibv_post_recv.
    Result<void> post(const verbs::RecvWr& wr, const verbs::RecvWr** bad = nullptr) noexcept;

private:
    friend class Device;
    Qp() = default;
    std::shared_ptr<detail::DeviceImpl> dev_;
    verbs::Qp* qp_ = nullptr;
    Address self_{};
    bool connected_ = false;
};

/// One open USB4 host interface (or an emulated one) with one protection domain.
/// Mr, Cq and Qp objects keep their Device's resources alive: they may be destroyed in any order.
class Device {
public:
    /// Opens a device. `where` is
    ///  * a PCI address of an NHI bound to vfio-pci: "0000:c3:00.5" (see `tbv list`, `tbv bind`);
    ///  * "emu:<cable>", "emu:<cable>/a" or "emu:<cable>/b": an emulated host whose USB4 port is
    ///    plugged into the shared-memory cable <cable> (/dev/shm/tbv-cable-<cable>), taking any
    ///    free end or the one named; the other process (or Device) opens the same cable;
    ///  * "": the value of TBV_EMU as "emu:$TBV_EMU" (ENODEV if it is unset).
    /// Returns once the device is initialised; the link to the peer comes up in the background
    /// (see wait_active). EINVAL for a malformed `where`; EBUSY when both cable ends are taken;
    /// VFIO errors as `describe()` explains.
    static Result<std::unique_ptr<Device>> open(std::string_view where);
    ~Device();
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    /// What open() was given ("emu:mycable/a", "0000:c3:00.5").
    const std::string& name() const noexcept;
    /// Our LID: a peer's Address names us with it.
    std::uint16_t lid() const noexcept;
    /// True while a peer is connected by a cable with working rails.
    bool active() const noexcept;
    /// Waits until active() (Errc::timeout otherwise), driving progress meanwhile.
    Result<void> wait_active(std::chrono::milliseconds timeout = std::chrono::seconds(20));
    /// One round of progress without looking at any CQ (for a process that only serves RDMA).
    void progress() noexcept;

    /// Registers [addr, addr+len) with `access` (kAccess* flags; remote write or atomic need
    /// local write). Any alignment and length (0 included) is accepted.
    Result<std::unique_ptr<Mr>> reg_mr(void* addr, std::size_t len, std::uint32_t access);
    /// A completion queue of at least `cqe` entries.
    Result<std::unique_ptr<Cq>> create_cq(std::uint32_t cqe);
    /// An RC QP completing sends on `send_cq` and receives on `recv_cq` (may be the same CQ).
    /// Its first PSN is random. The CQs must belong to this device (EINVAL otherwise).
    Result<std::unique_ptr<Qp>> create_qp(Cq& send_cq, Cq& recv_cq, const QpOptions& options = {});
    /// create_qp with one CQ for both directions.
    Result<std::unique_ptr<Qp>> create_qp(Cq& cq, const QpOptions& options = {}) {
        return create_qp(cq, cq, options);
    }

private:
    explicit Device(std::shared_ptr<detail::DeviceImpl> impl) noexcept;
    std::shared_ptr<detail::DeviceImpl> impl_;
};

/// A sentence for an error this API returned: its message, plus the cause and the fix where the
/// layer below recorded one on this thread (VFIO: which device is in the way, which limit to
/// raise).
std::string describe(std::error_code ec);

}  // namespace tbv
