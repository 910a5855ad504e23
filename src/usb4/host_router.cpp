// SPDX-License-Identifier: Apache-2.0
#include "usb4/host_router.hpp"

#include <array>

namespace tbv::usb4 {

using namespace hw::usb4;

namespace {

constexpr std::uint64_t kHostRoute = 0;
/// Linux programs 0xff ms (255 ms) as the notification (event re-send) timeout (ref §5.6).
constexpr std::uint32_t kNotificationTimeoutMs = 0xff;
/// Router operations complete within 500 ms (ref §6.1); polled this many times.
constexpr unsigned kRouterOpPolls = 50;
/// A capability list longer than this is a loop (adapter spaces are < 64 dwords of caps here).
constexpr unsigned kMaxCaps = 16;

}  // namespace

hw::usb4::UuidDwords HostRouter::uuid() const noexcept {
    return {static_cast<std::uint32_t>(uid_), static_cast<std::uint32_t>(uid_ >> 32), 0xffffffffu,
            0xffffffffu};
}

const AdapterInfo* HostRouter::adapter(unsigned number) const noexcept {
    for (const auto& a : adapters_) {
        if (a.number == number) {
            return &a;
        }
    }
    return nullptr;
}

std::vector<unsigned> HostRouter::usb4_ports() const {
    // Consecutive lane adapters i, i+1 form one port; lane 0 carries the USB4 port capability and
    // is where hot-plug events and inter-domain state live (ref §6.3, §7.3 step 1).
    // Pair them in order: the first unpaired lane adapter is lane 0, the next adapter (if it is
    // a lane adapter) its lane 1, which is skipped (Linux skips secondary lanes, ref §7.3).
    std::vector<unsigned> out;
    for (std::size_t i = 0; i < adapters_.size(); ++i) {
        const AdapterInfo& a = adapters_[i];
        if (!a.is_lane() || !a.usb4_cap || !a.lane_cap) {
            continue;
        }
        out.push_back(a.number);
        if (i + 1 < adapters_.size() && adapters_[i + 1].is_lane() &&
            adapters_[i + 1].number == a.number + 1) {
            ++i;
        }
    }
    return out;
}

Result<AdapterInfo> HostRouter::read_adapter(unsigned number) {
    std::array<std::uint32_t, kAdapterHeaderDwords> hdr{};
    if (auto r = ch_.read(kHostRoute, Space::adapter, number, 0, hdr); !r) {
        return Failure{r.error()};
    }
    AdapterInfo a;
    a.number = number;
    a.type = ADP2_TYPE::get(hdr[ADP_CS_2]);
    a.max_in_hop = ADP5_MAX_IN_HOP::get(hdr[ADP_CS_5]);
    a.max_out_hop = ADP5_MAX_OUT_HOP::get(hdr[ADP_CS_5]);
    a.total_buffers = ADP4_TOTAL_BUFFERS::get(hdr[ADP_CS_4]);
    // Capability walk from ADP_CS_1[7:0] (ref §6.2); each header: [7:0] next, [15:8] id.
    unsigned off = ADP1_FIRST_CAP::get(hdr[ADP_CS_1]);
    for (unsigned n = 0; off != 0 && n < kMaxCaps; ++n) {
        auto cap = ch_.read1(kHostRoute, Space::adapter, number, off);
        if (!cap) {
            return Failure{cap.error()};
        }
        const auto id = static_cast<CapId>(CAP_ID::get(*cap));
        if (id == CapId::lane) {
            a.lane_cap = off;
        } else if (id == CapId::usb4_port) {
            a.usb4_cap = off;
        }
        const unsigned next = CAP_NEXT::get(*cap);
        if (next != 0 && next <= off) {
            return fail(Errc::malformed);  // capability list goes backwards: a loop
        }
        off = next;
    }
    if (a.is_lane()) {
        // Path entry 0 of a lane adapter holds the control path's credits (ref §6.5).
        std::array<std::uint32_t, kPathEntryDwords> e0{};
        if (ch_.read(kHostRoute, Space::path, number, 0, e0)) {
            a.ctl_credits = PATH0_CREDITS::get(e0[0]);
        }
    }
    return a;
}

Result<std::uint32_t> HostRouter::read_ba_max_hi() {
    // Router operation 0x33 (buffer allocation query, ref §6.1): opcode with OV set, poll OV.
    if (auto w =
            ch_.write(kHostRoute, Space::router, 0, ROUTER_CS_26,
                      std::array{CS26_OPCODE::make(kRouterOpBufferAllocQuery) | CS26_OV::make(1)});
        !w) {
        return Failure{w.error()};
    }
    std::uint32_t cs26 = CS26_OV::make(1);
    for (unsigned i = 0; i < kRouterOpPolls && CS26_OV::get(cs26) != 0; ++i) {
        auto r = ch_.read1(kHostRoute, Space::router, 0, ROUTER_CS_26);
        if (!r) {
            return Failure{r.error()};
        }
        cs26 = *r;
    }
    if (CS26_OV::get(cs26) != 0) {
        return fail(Errc::timeout);
    }
    if (CS26_ONS::get(cs26) != 0) {
        return fail(Errc::not_supported);
    }
    auto meta = ch_.read1(kHostRoute, Space::router, 0, ROUTER_CS_25);
    if (!meta) {
        return Failure{meta.error()};
    }
    const unsigned n = *meta > 16 ? 16 : *meta;
    std::array<std::uint32_t, 16> data{};
    if (n > 0) {
        if (auto r = ch_.read(kHostRoute, Space::router, 0, ROUTER_CS_9, std::span(data).first(n));
            !r) {
            return Failure{r.error()};
        }
    }
    for (unsigned i = 0; i < n; ++i) {
        if ((data[i] & 0xffffu) == kBaMaxHi) {
            return data[i] >> 16;
        }
    }
    return fail(Errc::not_supported);
}

Result<void> HostRouter::enumerate() {
    // ref §7.2 step 4: the upstream adapter of the host router is its NHI adapter.
    auto up = ch_.upstream_adapter(kHostRoute);
    if (!up) {
        return Failure{up.error()};
    }
    upstream_ = *up;
    std::array<std::uint32_t, 5> cs{};
    if (auto r = ch_.read(kHostRoute, Space::router, 0, ROUTER_CS_0, cs); !r) {
        return Failure{r.error()};
    }
    vendor_ = static_cast<std::uint16_t>(CS0_VENDOR::get(cs[0]));
    device_ = static_cast<std::uint16_t>(CS0_DEVICE::get(cs[0]));
    max_adapter_ = CS1_MAX_ADAPTER::get(cs[1]);
    if (CS4_USB4_VERSION::get(cs[4]) == 0) {
        return fail(Errc::not_supported);  // a Thunderbolt 3 router: no USB4 CM path here
    }

    // ref §7.2 step 5: route 0, depth 0, upstream as reported, valid; CM USB4 version and the
    // notification timeout; CS_1..CS_4 in one write.
    cs[1] = CS1_UPSTREAM::set(CS1_DEPTH::set(cs[1], 0), upstream_);
    cs[2] = 0;
    cs[3] = CS3_VALID::make(1);
    cs[4] = CS4_CMUV::set(CS4_NOTIFICATION_TIMEOUT::set(cs[4], kNotificationTimeoutMs), kCmuvV1);
    if (auto w = ch_.write(kHostRoute, Space::router, 0, ROUTER_CS_1, std::span(cs).subspan(1, 4));
        !w) {
        return Failure{w.error()};
    }

    std::array<std::uint32_t, 2> uid{};
    if (auto r = ch_.read(kHostRoute, Space::router, 0, ROUTER_CS_7, uid); !r) {
        return Failure{r.error()};
    }
    uid_ = std::uint64_t{uid[1]} << 32 | uid[0];
    // Hosts without the buffer-allocation op keep Linux's default of 14 DMA credits.
    auto ba = read_ba_max_hi();
    ba_max_hi_ = ba ? *ba : 0;

    // ref §7.2 step 7: every adapter header; unimplemented ones answer error 2 and are skipped.
    adapters_.clear();
    for (unsigned n = 1; n <= max_adapter_; ++n) {
        auto a = read_adapter(n);
        if (!a) {
            if (a.error() == std::errc::no_such_device) {
                continue;
            }
            return Failure{a.error()};
        }
        adapters_.push_back(*a);
    }
    if (adapter(upstream_) == nullptr || !adapter(upstream_)->is_nhi()) {
        return fail(Errc::malformed);  // the host router's upstream adapter must be its NHI
    }

    // ref §7.2 step 8: hot plug on every lane adapter with a USB4 port capability (DHP cleared).
    for (const auto& a : adapters_) {
        if (!a.is_lane() || !a.usb4_cap) {
            continue;
        }
        auto cs5 = ch_.read1(kHostRoute, Space::adapter, a.number, ADP_CS_5);
        if (!cs5) {
            return Failure{cs5.error()};
        }
        if (ADP5_DHP::get(*cs5) != 0) {
            if (auto w = ch_.write(kHostRoute, Space::adapter, a.number, ADP_CS_5,
                                   std::array{ADP5_DHP::set(*cs5, 0)});
                !w) {
                return Failure{w.error()};
            }
        }
    }
    return ok();
}

Result<LaneStatus> HostRouter::lane_status(unsigned number) {
    const AdapterInfo* a = adapter(number);
    if (a == nullptr || !a->lane_cap) {
        return fail(std::errc::no_such_device);
    }
    auto cs1 = ch_.read1(kHostRoute, Space::adapter, number, *a->lane_cap + LANE_ADP_CS_1);
    if (!cs1) {
        return Failure{cs1.error()};
    }
    LaneStatus s;
    s.state = static_cast<LaneState>(LANE1_STATE::get(*cs1));
    s.speed = LANE1_CURRENT_SPEED::get(*cs1);
    s.width = LANE1_CURRENT_WIDTH::get(*cs1);
    return s;
}

Result<void> HostRouter::unlock(unsigned number) {
    auto cs4 = ch_.read1(kHostRoute, Space::adapter, number, ADP_CS_4);
    if (!cs4) {
        return Failure{cs4.error()};
    }
    if (ADP4_LCK::get(*cs4) == 0) {
        return ok();
    }
    return ch_.write(kHostRoute, Space::adapter, number, ADP_CS_4,
                     std::array{ADP4_LCK::set(*cs4, 0)});
}

Result<void> HostRouter::set_inter_domain(unsigned number, bool on) {
    const AdapterInfo* a = adapter(number);
    if (a == nullptr || !a->usb4_cap) {
        return fail(std::errc::no_such_device);
    }
    const unsigned off = *a->usb4_cap + PORT_CS_19;
    auto cs19 = ch_.read1(kHostRoute, Space::adapter, number, off);
    if (!cs19) {
        return Failure{cs19.error()};
    }
    return ch_.write(kHostRoute, Space::adapter, number, off,
                     std::array{PORT19_PID::set(*cs19, on ? 1 : 0)});
}

Result<void> HostRouter::write_path(unsigned number, unsigned hop,
                                    std::span<const std::uint32_t> entry) {
    return ch_.write(kHostRoute, Space::path, number, hop * kPathEntryDwords, entry);
}

Result<std::array<std::uint32_t, 2>> HostRouter::read_path(unsigned number, unsigned hop) {
    std::array<std::uint32_t, 2> e{};
    if (auto r = ch_.read(kHostRoute, Space::path, number, hop * kPathEntryDwords, e); !r) {
        return Failure{r.error()};
    }
    return e;
}

}  // namespace tbv::usb4
