// SPDX-License-Identifier: Apache-2.0
// The vm suite's guest program: runs inside the QEMU guest (test/vm/run-vm-suite) against QEMU's
// edu and nvme PCI functions bound to vfio-pci, through VfioDevice, in the mode TBV_VFIO_MODE
// names (legacy or iommufd). TBV_VM_EDU / TBV_VM_NVME give the functions' addresses.
//
// Device facts used here (QEMU docs/specs/edu.rst and hw/misc/edu.c, QEMU 7.2):
//   edu BAR0: 0x00 ID 0x010000ed, 0x04 liveness (reads ~written), 0x60 raise IRQ, 0x64 ack,
//   0x80 DMA source, 0x88 DMA destination, 0x90 count, 0x98 command (bit0 start, bit1 edu->RAM,
//   bit2 IRQ on completion); its DMA buffer is edu address 0x40000 (4 KiB; QEMU 7.2 aborts on a
//   transfer touching its last byte, so stay below 4096); DMA addresses are masked to 28 bits.
//   nvme (NVMe 1.4 §3.1): CAP 0x00, VS 0x08, CC 0x14, CSTS 0x1c, AQA 0x24, ASQ 0x28, ACQ 0x30,
//   doorbells from 0x1000 (stride 4 << CAP.DSTRD). MSI-X must be enabled before CC.EN=1, or
//   QEMU 7.2's model never marks the admin CQ's vector used.
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <linux/capability.h>

#include "catch.hpp"
#include "device_conformance.hpp"
#include "vfio/error.hpp"
#include "vfio/vfio_device.hpp"

using tbv::hw::DmaAccess;
using tbv::test::PageBuffer;
using tbv::vfio::VfioDevice;

namespace {

constexpr std::uint32_t kEduId = 0x00, kEduLive = 0x04, kEduIrqRaise = 0x60, kEduIrqAck = 0x64;
constexpr std::uint32_t kEduDmaSrc = 0x80, kEduDmaDst = 0x88, kEduDmaCount = 0x90;
constexpr std::uint32_t kEduDmaCmd = 0x98;
constexpr std::uint32_t kEduBuffer = 0x40000;
constexpr std::uint32_t kDmaStart = 1, kDmaToRam = 2;
constexpr std::size_t kXfer = 2048;

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr ? v : "";
}

tbv::vfio::Options edu_options() {
    tbv::vfio::Options o;
    o.iova_max = (1ULL << 28) - 1;  // edu's default dma_mask
    o.soft_reset_fallback = true;   // edu has neither FLR nor PM reset
    return o;
}

std::unique_ptr<VfioDevice> open_or_fail(const std::string& bdf, const tbv::vfio::Options& o) {
    auto r = VfioDevice::open(bdf, o);
    if (!r) {
        FAIL("VfioDevice::open(" << bdf << "): " << tbv::vfio::describe(r.error()));
    }
    return std::move(*r);
}

std::unique_ptr<VfioDevice> open_edu() {
    const std::string bdf = env("TBV_VM_EDU");
    if (bdf.empty()) {
        return nullptr;
    }
    return open_or_fail(bdf, edu_options());
}

std::unique_ptr<VfioDevice> open_nvme() {
    const std::string bdf = env("TBV_VM_NVME");
    if (bdf.empty()) {
        return nullptr;
    }
    return open_or_fail(bdf, {});
}

/// Runs one edu DMA and waits for it (edu completes after ~100 ms of virtual time).
bool edu_dma(VfioDevice& d, std::uint64_t src, std::uint64_t dst, bool to_ram) {
    d.write32(kEduDmaSrc, static_cast<std::uint32_t>(src));
    d.write32(kEduDmaDst, static_cast<std::uint32_t>(dst));
    d.write32(kEduDmaCount, static_cast<std::uint32_t>(kXfer));
    d.write32(kEduDmaCmd, kDmaStart | (to_ram ? kDmaToRam : 0));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while ((d.read32(kEduDmaCmd) & kDmaStart) != 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

bool wait_eventfd(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) {
        return false;
    }
    std::uint64_t n = 0;
    return ::read(fd, &n, sizeof(n)) == sizeof(n) && n > 0;
}

/// Sum of the DMAR fault interrupt counts in /proc/interrupts (not rate-limited, unlike the
/// kernel's fault log); -1 if there is no such line.
long dmar_fault_irqs() {
    std::ifstream f("/proc/interrupts");
    std::string line;
    long total = -1;
    while (std::getline(f, line)) {
        if (line.find("DMAR") == std::string::npos) {
            continue;
        }
        total = total < 0 ? 0 : total;
        const auto colon = line.find(':');
        std::size_t pos = colon + 1;
        char* end = nullptr;
        for (;;) {
            const long v = std::strtol(line.c_str() + pos, &end, 10);
            if (end == line.c_str() + pos) {
                break;
            }
            total += v;
            pos = static_cast<std::size_t>(end - line.c_str());
        }
    }
    return total;
}

void fill(PageBuffer& b, std::uint8_t seed) {
    for (std::size_t i = 0; i < b.size(); ++i) {
        b.data()[i] = static_cast<std::byte>(seed + i * 7);
    }
}

bool all_bytes(const PageBuffer& b, std::size_t n, std::uint8_t v) {
    for (std::size_t i = 0; i < n; ++i) {
        if (b.data()[i] != static_cast<std::byte>(v)) {
            return false;
        }
    }
    return true;
}

/// Drops or restores CAP_IPC_LOCK in this thread's effective set (stays permitted).
bool set_ipc_lock(bool on) {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &hdr, data) != 0) {
        return false;
    }
    const unsigned bit = 1u << CAP_IPC_LOCK;
    data[0].effective = on ? (data[0].effective | bit) : (data[0].effective & ~bit);
    return ::syscall(SYS_capset, &hdr, data) == 0;
}

}  // namespace

TEST_CASE("edu: device conformance through VfioDevice") {
    if (env("TBV_VM_EDU").empty()) {
        TBV_SKIP("TBV_VM_EDU not set");
    }
    tbv::test::check_device_conformance([] { return open_edu(); }, kEduId);
}

TEST_CASE("nvme: device conformance through VfioDevice (MSI-X, function reset)") {
    if (env("TBV_VM_NVME").empty()) {
        TBV_SKIP("TBV_VM_NVME not set");
    }
    tbv::test::check_device_conformance([] { return open_nvme(); }, 0x08 /* VS */);
}

TEST_CASE("edu: identity, BAR access, IOVA ranges, mode") {
    auto d = open_edu();
    if (!d) {
        TBV_SKIP("TBV_VM_EDU not set");
    }
    const std::string want = env("TBV_VFIO_MODE");
    CHECK(std::string(tbv::vfio::mode_name(d->mode())) == want);
    CHECK(d->identity().vendor == 0x1234);
    CHECK(d->identity().device == 0x11e8);
    CHECK(d->read32(kEduId) == 0x010000edu);
    for (std::uint32_t v : {0u, 0x12345678u, 0xffffffffu}) {
        d->write32(kEduLive, v);
        CHECK(d->read32(kEduLive) == ~v);
    }
    CHECK(d->bar0_mapped_bytes() == d->bar0_size());
    CHECK(d->present());
    CHECK(d->irq_kind() == tbv::vfio::IrqKind::msi);
    REQUIRE_FALSE(d->iova_ranges().empty());
    for (const auto& r : d->iova_ranges()) {
        // The x86 MSI window never appears among usable IOVAs (and edu's clip is 28 bits).
        CHECK((r.last < 0xfee00000ULL || r.start > 0xfeefffffULL));
        CHECK(r.last < (1ULL << 28));
    }
}

TEST_CASE("edu: DMA both ways through IOMMU mappings") {
    auto d = open_edu();
    if (!d) {
        TBV_SKIP("TBV_VM_EDU not set");
    }
    PageBuffer src(1), dst(1);
    fill(src, 0x31);
    std::memset(dst.data(), 0, dst.size());
    auto s = d->dma_map(src.data(), src.size(), DmaAccess::read);
    auto t = d->dma_map(dst.data(), dst.size(), DmaAccess::write);
    REQUIRE(s);
    REQUIRE(t);
    REQUIRE(d->set_bus_master(true));
    REQUIRE(edu_dma(*d, *s, kEduBuffer, false));  // RAM -> edu
    REQUIRE(edu_dma(*d, kEduBuffer, *t, true));   // edu -> RAM
    CHECK(std::memcmp(src.data(), dst.data(), kXfer) == 0);
    CHECK(d->dma_unmap(*s, src.size()));
    CHECK(d->dma_unmap(*t, dst.size()));
}

TEST_CASE("edu: faults on unmapped and read-only IOVAs leave memory untouched; remap works") {
    auto d = open_edu();
    if (!d) {
        TBV_SKIP("TBV_VM_EDU not set");
    }
    REQUIRE(d->set_bus_master(true));
    PageBuffer good(1), ro(1), gone(1);
    fill(good, 0x11);
    auto g = d->dma_map(good.data(), good.size(), DmaAccess::read_write);
    REQUIRE(g);
    REQUIRE(edu_dma(*d, *g, kEduBuffer, false));  // edu buffer = pattern
    const long faults0 = dmar_fault_irqs();

    // 1. Device write into a mapping the device may only read.
    std::memset(ro.data(), 0x5a, ro.size());
    auto r = d->dma_map(ro.data(), ro.size(), DmaAccess::read);
    REQUIRE(r);
    REQUIRE(edu_dma(*d, kEduBuffer, *r, true));
    CHECK(all_bytes(ro, ro.size(), 0x5a));

    // 2. Device write to an IOVA that was unmapped.
    std::memset(gone.data(), 0x6b, gone.size());
    auto u = d->dma_map(gone.data(), gone.size(), DmaAccess::write);
    REQUIRE(u);
    REQUIRE(d->dma_unmap(*u, gone.size()));
    REQUIRE(edu_dma(*d, kEduBuffer, *u, true));
    CHECK(all_bytes(gone, gone.size(), 0x6b));

    // 3. Device read from an IOVA never mapped (far from every allocation).
    REQUIRE(edu_dma(*d, 0x0ff00000u, kEduBuffer, false));

    const long faults1 = dmar_fault_irqs();
    if (faults0 >= 0) {
        INFO("DMAR fault interrupts before " << faults0 << ", after " << faults1);
        CHECK(faults1 >= faults0 + 3);
    }

    // 4. After the faults: map again and DMA works.
    auto again = d->dma_map(gone.data(), gone.size(), DmaAccess::write);
    REQUIRE(again);
    REQUIRE(edu_dma(*d, *g, kEduBuffer, false));
    REQUIRE(edu_dma(*d, kEduBuffer, *again, true));
    CHECK(std::memcmp(good.data(), gone.data(), kXfer) == 0);
    CHECK(d->dma_unmap(*again, gone.size()));
    CHECK(d->dma_unmap(*r, ro.size()));
    CHECK(d->dma_unmap(*g, good.size()));
}

TEST_CASE("edu: MSI into an eventfd") {
    auto d = open_edu();
    if (!d) {
        TBV_SKIP("TBV_VM_EDU not set");
    }
    REQUIRE(d->irq_vector_count() == 1);
    REQUIRE(d->set_bus_master(true));  // an MSI is a memory write by the device
    REQUIRE(d->enable_irqs(1));
    const int fd = d->irq_eventfd(0);
    REQUIRE(fd >= 0);
    int got = 0;
    for (std::uint32_t i = 1; i <= 20; ++i) {
        d->write32(kEduIrqRaise, i);
        if (wait_eventfd(fd, 2000)) {
            ++got;
        }
        d->write32(kEduIrqAck, i);
    }
    CHECK(got == 20);
    CHECK_FALSE(wait_eventfd(fd, 50));  // nothing spurious
    d->disable_irqs();
}

TEST_CASE("nvme: admin Identify completes through MSI-X into an eventfd") {
    auto d = open_nvme();
    if (!d) {
        TBV_SKIP("TBV_VM_NVME not set");
    }
    REQUIRE(d->irq_kind() == tbv::vfio::IrqKind::msix);
    REQUIRE(d->irq_vector_count() >= 1);
    constexpr std::uint32_t CAP = 0x00, CC = 0x14, CSTS = 0x1c, AQA = 0x24, ASQ = 0x28, ACQ = 0x30;
    const std::uint32_t cap_hi = d->read32(CAP + 4);
    const std::uint32_t stride = 4u << (cap_hi & 0xfu);  // CAP.DSTRD, bits 35:32
    auto wait_rdy = [&](bool want) {
        for (int i = 0; i < 2000; ++i) {
            if (((d->read32(CSTS) & 1u) != 0) == want) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return false;
    };
    d->write32(CC, 0);
    REQUIRE(wait_rdy(false));
    PageBuffer sq(1), cq(1), data(1);
    std::memset(sq.data(), 0, sq.size());
    std::memset(cq.data(), 0, cq.size());
    std::memset(data.data(), 0, data.size());
    auto sqi = d->dma_map(sq.data(), sq.size(), DmaAccess::read);
    auto cqi = d->dma_map(cq.data(), cq.size(), DmaAccess::write);
    auto dti = d->dma_map(data.data(), data.size(), DmaAccess::write);
    REQUIRE(sqi);
    REQUIRE(cqi);
    REQUIRE(dti);
    REQUIRE(d->set_bus_master(true));
    REQUIRE(d->enable_irqs(1));  // before CC.EN (see the top of the file)
    constexpr std::uint32_t kDepth = 16;
    d->write32(AQA, (kDepth - 1) | ((kDepth - 1) << 16));
    d->write32(ASQ, static_cast<std::uint32_t>(*sqi));
    d->write32(ASQ + 4, static_cast<std::uint32_t>(*sqi >> 32));
    d->write32(ACQ, static_cast<std::uint32_t>(*cqi));
    d->write32(ACQ + 4, static_cast<std::uint32_t>(*cqi >> 32));
    d->write32(CC, 1u | (6u << 16) | (4u << 20));  // EN, IOSQES=64 B, IOCQES=16 B
    REQUIRE(wait_rdy(true));

    auto* sqe = reinterpret_cast<volatile std::uint32_t*>(sq.data());
    const auto* cqe = reinterpret_cast<const volatile std::uint32_t*>(cq.data());
    int completed = 0;
    for (std::uint32_t i = 0; i < 10; ++i) {
        const std::uint32_t slot = i % kDepth;
        volatile std::uint32_t* e = sqe + slot * 16;
        for (int w = 0; w < 16; ++w) {
            e[w] = 0;
        }
        e[0] = 0x06u | ((i + 1) << 16);  // opcode Identify, command id
        e[6] = static_cast<std::uint32_t>(*dti);
        e[7] = static_cast<std::uint32_t>(*dti >> 32);
        e[10] = 1;                                              // CNS 1: identify controller
        d->write32(0x1000, slot + 1 == kDepth ? 0 : slot + 1);  // SQ 0 tail doorbell
        if (!wait_eventfd(d->irq_eventfd(0), 2000)) {
            continue;
        }
        const volatile std::uint32_t* c = cqe + slot * 4;
        if ((c[3] & 0xffffu) == i + 1 && ((c[3] >> 17) & 0x7fffu) == 0) {
            ++completed;
        }
        d->write32(0x1000 + stride, slot + 1 == kDepth ? 0 : slot + 1);  // CQ 0 head doorbell
    }
    CHECK(completed == 10);
    std::uint16_t vid = 0;
    std::memcpy(&vid, data.data(), 2);
    CHECK(vid == 0x1b36);  // Red Hat / QEMU
    const std::string serial(reinterpret_cast<const char*>(data.data()) + 4, 20);
    CHECK(serial.rfind(env("TBV_VM_NVME_SERIAL"), 0) == 0);
    d->write32(CC, 0);
    CHECK(wait_rdy(false));
    d->disable_irqs();
    CHECK(d->dma_unmap(*sqi, sq.size()));
    CHECK(d->dma_unmap(*cqi, cq.size()));
    CHECK(d->dma_unmap(*dti, data.size()));
}

TEST_CASE("memlock: a low RLIMIT_MEMLOCK gives ENOMEM with the limit and the fix") {
    if (env("TBV_VM_EDU").empty()) {
        TBV_SKIP("TBV_VM_EDU not set");
    }
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_MEMLOCK, &saved) == 0);
    REQUIRE(set_ipc_lock(false));  // root would bypass the limit
    rlimit low = saved;
    low.rlim_cur = 64 * 1024;
    REQUIRE(::setrlimit(RLIMIT_MEMLOCK, &low) == 0);
    {
        auto d = open_edu();
        PageBuffer big(256);  // 1 MiB > 64 KiB
        auto r = d->dma_map(big.data(), big.size(), DmaAccess::read_write);
        CHECK_FALSE(r);
        CHECK(r.error() == std::make_error_code(std::errc::not_enough_memory));
        const std::string detail = tbv::vfio::last_error_detail();
        INFO(detail);
        CHECK(detail.find("RLIMIT_MEMLOCK is 65536 bytes") != std::string::npos);
        CHECK(detail.find("ulimit -l") != std::string::npos);
        PageBuffer small(4);  // fits under the limit
        auto s = d->dma_map(small.data(), small.size(), DmaAccess::read);
        CHECK(s);
        if (s) {
            CHECK(d->dma_unmap(*s, small.size()));
        }
    }
    CHECK(::setrlimit(RLIMIT_MEMLOCK, &saved) == 0);
    CHECK(set_ipc_lock(true));
}

TEST_CASE("open errors name the cause") {
    auto bad = VfioDevice::open("not-a-bdf");
    CHECK_FALSE(bad);
    CHECK(bad.error() == std::make_error_code(std::errc::invalid_argument));
    if (env("TBV_VM_EDU").empty()) {
        return;
    }
    // The group (legacy) or the device (iommufd) is already owned: a second open must fail
    // with a message, not hang or succeed.
    auto first = open_edu();
    auto second = VfioDevice::open(env("TBV_VM_EDU"), edu_options());
    CHECK_FALSE(second);
    INFO(tbv::vfio::describe(second.error()));
    CHECK_FALSE(tbv::vfio::last_error_detail().empty());
}
