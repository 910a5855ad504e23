// SPDX-License-Identifier: Apache-2.0
// The router's configuration spaces (ref §6): power-on layout like the AMD host of ref §1.4 and
// §12.4, and what reads and writes do. Every register keeps a writable-bits mask, so a write
// changes only what the CM may change, and read-only status (lane state, pending) stays the
// model's.
#include <algorithm>

#include "emu/nhi.hpp"
#include "emu/router.hpp"

namespace tbv::emu {

using namespace hw::usb4;

namespace {

constexpr std::uint32_t kAll = 0xffffffffu;
constexpr unsigned kTmuCapDwords = 8;
constexpr unsigned kProtocolCapDwords = 4;
constexpr unsigned kLaneCapDwords = 4;
constexpr unsigned kProtocolMaxHop = 15;
/// PORT_CS_19 bits the CM writes: DPR, PC, PID, WOC/WOD/WOU4, START_ASYM, ELR (ref §6.4).
constexpr std::uint32_t kPort19Writable =
    PORT19_DPR::kMask | PORT19_PC::kMask | PORT19_PID::kMask | (7u << 16) | (1u << 24) | (1u << 31);
/// LANE_ADP_CS_1 [15:0]: target speed/width, asym target, CLx enables, LD, LB (ref §6.3).
constexpr std::uint32_t kLane1Writable = 0x0000ffffu;

std::uint32_t cap_header(unsigned next, CapId id) {
    return CAP_NEXT::make(next) | CAP_ID::make(static_cast<std::uint32_t>(id));
}

}  // namespace

void Router::build_spaces() {
    // ---- router space (ref §6.1), then a TMU capability as the first capability ----
    router_space_.assign(kTmuCap + kTmuCapDwords, 0);
    router_wmask_.assign(router_space_.size(), 0);
    const unsigned n_adapters =
        2 + 2 * cfg_.usb4_ports + (cfg_.protocol_adapters ? 4u : 0u) + cfg_.unimplemented_adapters;
    router_space_[ROUTER_CS_0] = CS0_VENDOR::make(cfg_.vendor) | CS0_DEVICE::make(cfg_.device);
    router_space_[ROUTER_CS_1] = CS1_FIRST_CAP::make(kTmuCap) | CS1_UPSTREAM::make(kNhiAdapter) |
                                 CS1_MAX_ADAPTER::make(n_adapters - 1) | CS1_DEPTH::make(0);
    router_space_[ROUTER_CS_3] = CS3_VALID::make(cfg_.enabled_at_boot ? 1 : 0);
    router_space_[ROUTER_CS_4] = CS4_USB4_VERSION::make(0x20);
    router_space_[ROUTER_CS_7] = static_cast<std::uint32_t>(cfg_.uid);
    router_space_[ROUTER_CS_8] = static_cast<std::uint32_t>(cfg_.uid >> 32);
    router_space_[kTmuCap] = cap_header(0, CapId::tmu);

    router_wmask_[ROUTER_CS_1] = CS1_UPSTREAM::kMask | CS1_DEPTH::kMask;
    router_wmask_[ROUTER_CS_2] = kAll;
    router_wmask_[ROUTER_CS_3] = kAll;
    router_wmask_[ROUTER_CS_4] = CS4_NOTIFICATION_TIMEOUT::kMask | CS4_CMUV::kMask;
    router_wmask_[ROUTER_CS_5] = kAll;
    for (unsigned i = ROUTER_CS_9; i <= ROUTER_CS_25; ++i) {
        router_wmask_[i] = kAll;
    }
    router_wmask_[ROUTER_CS_26] = CS26_OPCODE::kMask | CS26_OV::kMask;
    for (unsigned i = kTmuCap + 1; i < router_space_.size(); ++i) {
        router_wmask_[i] = kAll;
    }

    // ---- adapters (ref §6.2, AMD layout of ref §1.4) ----
    adapters_.clear();
    adapters_.reserve(n_adapters);
    {
        // Adapter 0: the control adapter. A bare header; Linux does not read it.
        Adapter a;
        a.implemented = true;
        init_adapter_header(a, 0, 0);
        adapters_.push_back(std::move(a));
    }
    {
        // Adapter 1: the NHI (host interface), the upstream adapter. HopIDs are ring numbers;
        // total buffers 0 as observed on AMD.
        Adapter a;
        a.implemented = true;
        a.type = AdapterType::nhi;
        const unsigned max_hop = nhi_.hop_count() - 1;
        init_adapter_header(a, kNhiAdapter, max_hop);
        adapters_.push_back(std::move(a));
    }
    for (unsigned p = 0; p < cfg_.usb4_ports; ++p) {
        for (unsigned l = 0; l < 2; ++l) {
            adapters_.push_back(make_lane_adapter(lane_adapter(p, l), p, l));
        }
    }
    if (cfg_.protocol_adapters) {
        for (const AdapterType t : {AdapterType::usb3_down, AdapterType::pcie_down,
                                    AdapterType::dp_in, AdapterType::dp_in}) {
            adapters_.push_back(make_protocol_adapter(static_cast<unsigned>(adapters_.size()), t));
        }
    }
    for (unsigned i = 0; i < cfg_.unimplemented_adapters; ++i) {
        adapters_.push_back(Adapter{});  // ref §6.2: answers error 2
    }
}

void Router::init_adapter_header(Adapter& a, unsigned number, unsigned max_hop) const {
    a.space.assign(kAdapterHeaderDwords, 0);
    a.wmask.assign(kAdapterHeaderDwords, 0);
    a.space[ADP_CS_0] = CS0_VENDOR::make(cfg_.vendor) | CS0_DEVICE::make(cfg_.device);
    // Max counters 0: ADP_CS_1[15:8] must not look like a capability ID (ref §6.2).
    a.space[ADP_CS_1] = ADP1_FIRST_CAP::make(0) | ADP1_MAX_COUNTERS::make(0);
    a.space[ADP_CS_2] = ADP2_TYPE::make(static_cast<std::uint32_t>(a.type)) | ADP2_VERSION::make(1);
    a.space[ADP_CS_3] = ADP3_NUMBER::make(number);
    a.space[ADP_CS_5] = ADP5_MAX_IN_HOP::make(max_hop) | ADP5_MAX_OUT_HOP::make(max_hop);
    a.wmask[ADP_CS_4] = ADP4_LCK::kMask;
    a.wmask[ADP_CS_5] = ADP5_DHP::kMask | ADP5_LCA::kMask;
    if (number != kControlAdapter) {
        a.has_path_space = true;
        a.path.assign(std::size_t{kPathEntryDwords} * (max_hop + 1), 0);
        a.pending_reads.assign(max_hop + 1, 0);
        a.pending_until.assign(max_hop + 1, Time{});
    }
}

Router::Adapter Router::make_lane_adapter(unsigned number, unsigned port, unsigned lane) const {
    Adapter a;
    a.implemented = true;
    a.type = AdapterType::lane;
    a.lane = true;
    a.port = port;
    a.lane_index = lane;
    init_adapter_header(a, number, cfg_.lane_max_hop);
    a.space[ADP_CS_1] = ADP1_FIRST_CAP::set(a.space[ADP_CS_1], kLaneCap);
    // ref §6.2/§12.4: 128 total buffers, locked (LCK) and hot plug disabled (DHP) at power-on.
    a.space[ADP_CS_4] = ADP4_TOTAL_BUFFERS::make(cfg_.lane_total_buffers) | ADP4_LCK::make(1);
    a.space[ADP_CS_5] = ADP5_DHP::set(a.space[ADP_CS_5], 1);

    const unsigned end = kUsb4Cap + PORT_CS_19 + 1;
    a.space.resize(end, 0);
    a.wmask.resize(end, 0);
    // Lane capability (ref §6.3): Gen2+Gen3, x1 and x2, no CLx (AMD quirk, ref §1.4).
    a.space[kLaneCap + LANE_ADP_CS_0] = cap_header(kUsb4Cap, CapId::lane) |
                                        LANE0_SUPPORTED_SPEEDS::make(kSpeedGen2 | kSpeedGen3) |
                                        LANE0_SUPPORTED_WIDTHS::make(0x3);
    a.space[kLaneCap + LANE_ADP_CS_1] =
        LANE1_TARGET_SPEED::make(0xc) | LANE1_TARGET_WIDTH::make(kTargetWidthSingle) |
        LANE1_STATE::make(static_cast<std::uint32_t>(LaneState::unplugged));
    a.wmask[kLaneCap + LANE_ADP_CS_1] = kLane1Writable;
    static_assert(kLaneCap + kLaneCapDwords <= kUsb4Cap);
    // USB4 port capability (ref §6.4): bonding possible, not TBT3-compatible.
    a.space[kUsb4Cap] = cap_header(0, CapId::usb4_port);
    for (unsigned i = 1; i <= 17; ++i) {
        a.wmask[kUsb4Cap + i] = kAll;  // sideband access registers: stored, not acted on
    }
    a.space[kUsb4Cap + PORT_CS_18] = PORT18_BE::make(1);
    a.wmask[kUsb4Cap + PORT_CS_19] = kPort19Writable;
    // Path entry 0 is the control path; the CM reads its credits (ref §6.5).
    a.path[0] = PATH0_CREDITS::make(cfg_.ctl_credits);
    return a;
}

Router::Adapter Router::make_protocol_adapter(unsigned number, AdapterType type) const {
    Adapter a;
    a.implemented = true;
    a.type = type;
    init_adapter_header(a, number, kProtocolMaxHop);
    a.space[ADP_CS_1] = ADP1_FIRST_CAP::set(a.space[ADP_CS_1], kProtocolCap);
    a.space.resize(kProtocolCap + kProtocolCapDwords, 0);
    a.wmask.resize(a.space.size(), 0);
    a.space[kProtocolCap] = cap_header(0, CapId::protocol);
    for (unsigned i = 1; i < kProtocolCapDwords; ++i) {
        a.wmask[kProtocolCap + i] = kAll;
    }
    return a;
}

std::optional<ErrorCode> Router::check_adapter(unsigned adapter) const {
    if (adapter >= adapters_.size() || !adapters_[adapter].implemented) {
        return ErrorCode::invalid_config_space;  // ref §6.2: unimplemented adapters answer 2
    }
    return std::nullopt;
}

std::optional<ErrorCode> Router::read_space(Space space, unsigned adapter, unsigned offset,
                                            unsigned len, std::uint32_t* out, Time now) {
    switch (space) {
        case Space::router:
            if (offset + len > router_space_.size()) {
                return ErrorCode::invalid_config_space;
            }
            std::copy_n(router_space_.begin() + offset, len, out);
            return std::nullopt;
        case Space::adapter: {
            if (auto e = check_adapter(adapter)) {
                return e;
            }
            const Adapter& a = adapters_[adapter];
            if (offset + len > a.space.size()) {
                return ErrorCode::invalid_config_space;
            }
            std::copy_n(a.space.begin() + offset, len, out);
            return std::nullopt;
        }
        case Space::path: {
            if (auto e = check_adapter(adapter)) {
                return e;
            }
            Adapter& a = adapters_[adapter];
            if (!a.has_path_space || offset + len > a.path.size()) {
                return ErrorCode::invalid_config_space;
            }
            for (unsigned i = 0; i < len; ++i) {
                const unsigned off = offset + i;
                const unsigned hop = off / kPathEntryDwords;
                std::uint32_t& dw1 = a.path[hop * kPathEntryDwords + 1];
                if (off % kPathEntryDwords == 1 && PATH1_PENDING::get(dw1) != 0) {
                    // The drain model: pending reads 1 for a few reads or a short while.
                    if (a.pending_reads[hop] == 0 || now >= a.pending_until[hop]) {
                        dw1 = PATH1_PENDING::set(dw1, 0);
                    } else {
                        --a.pending_reads[hop];
                    }
                }
                out[i] = a.path[off];
            }
            return std::nullopt;
        }
        case Space::counters: break;
    }
    return ErrorCode::invalid_config_space;  // counters space is not modelled
}

std::optional<ErrorCode> Router::write_space(Space space, unsigned adapter, unsigned offset,
                                             std::span<const std::uint32_t> data, Time now,
                                             Outbox& out) {
    const auto len = static_cast<unsigned>(data.size());
    switch (space) {
        case Space::router:
            if (offset + len > router_space_.size()) {
                return ErrorCode::invalid_config_space;
            }
            for (unsigned i = 0; i < len; ++i) {
                write_router_dword(offset + i, data[i]);
            }
            return std::nullopt;
        case Space::adapter: {
            if (auto e = check_adapter(adapter)) {
                return e;
            }
            if (offset + len > adapters_[adapter].space.size()) {
                return ErrorCode::invalid_config_space;
            }
            for (unsigned i = 0; i < len; ++i) {
                write_adapter_dword(adapter, offset + i, data[i], now, out);
            }
            return std::nullopt;
        }
        case Space::path: {
            if (auto e = check_adapter(adapter)) {
                return e;
            }
            const Adapter& a = adapters_[adapter];
            if (!a.has_path_space || offset + len > a.path.size()) {
                return ErrorCode::invalid_config_space;
            }
            for (unsigned i = 0; i < len; ++i) {
                write_path_dword(adapter, offset + i, data[i], now);
            }
            return std::nullopt;
        }
        case Space::counters: break;
    }
    return ErrorCode::invalid_config_space;
}

void Router::write_router_dword(unsigned off, std::uint32_t value) {
    std::uint32_t& r = router_space_[off];
    r = (r & ~router_wmask_[off]) | (value & router_wmask_[off]);
    if (off == ROUTER_CS_5) {
        // Configuration valid → configuration ready at once (ref §6.1 CV/CR).
        router_space_[ROUTER_CS_6] =
            CS6_CR::set(router_space_[ROUTER_CS_6], CS5_CV::get(router_space_[ROUTER_CS_5]));
    }
    if (off == ROUTER_CS_26 && CS26_OV::get(r) != 0) {
        run_router_op();
    }
}

void Router::run_router_op() {
    ++ctr_.router_ops;
    std::uint32_t& cs26 = router_space_[ROUTER_CS_26];
    const std::uint32_t op = CS26_OPCODE::get(cs26);
    cs26 = CS26_STATUS::set(cs26, 0);
    if (op == kRouterOpBufferAllocQuery && cfg_.buffer_alloc_op) {
        // ref §6.1: index/value pairs (idx [15:0], value [31:16]); the AMD values of ref §1.4:
        // maxUSB3 24, minDPaux 1, minDPmain 0, maxPCIe 32, baMaxHI.
        const std::uint32_t pairs[][2] = {{1, 24}, {2, 1}, {3, 0}, {4, 32}, {kBaMaxHi, 0}};
        unsigned n = 0;
        for (const auto& p : pairs) {
            const std::uint32_t v = p[0] == kBaMaxHi ? cfg_.ba_max_hi : p[1];
            router_space_[ROUTER_CS_9 + n++] = (p[0] & 0xffffu) | (v << 16);
        }
        router_space_[ROUTER_CS_25] = n;  // metadata: number of entries
        cs26 = CS26_ONS::set(cs26, 0);
    } else {
        cs26 = CS26_ONS::set(cs26, 1);  // every other operation: not supported
    }
    cs26 = CS26_OV::set(cs26, 0);  // completes at once
}

void Router::write_adapter_dword(unsigned adapter, unsigned off, std::uint32_t value, Time now,
                                 Outbox& out) {
    Adapter& a = adapters_[adapter];
    std::uint32_t& r = a.space[off];
    const std::uint32_t old = r;
    r = (r & ~a.wmask[off]) | (value & a.wmask[off]);
    if (!a.lane) {
        return;
    }
    if (off == kUsb4Cap + PORT_CS_19 && PORT19_DPR::get(old) != PORT19_DPR::get(r)) {
        if (PORT19_DPR::get(r) != 0) {
            // Downstream port reset (ref §12.4): the link drops and the port's paths are
            // cleared; it re-trains when DPR is released.
            ++ctr_.port_resets;
            for (unsigned l = 0; l < 2; ++l) {
                clear_paths(lane_adapter(a.port, l));
            }
        }
        refresh_port(a.port, now, out);
    } else if (off == kLaneCap + LANE_ADP_CS_1 && old != r) {
        refresh_port(a.port, now, out);
    } else if (off == ADP_CS_5 && ADP5_DHP::get(r) != 0) {
        // Hot plug disabled: nothing more is reported for this adapter.
        std::erase_if(events_, [&](const PendingEvent& e) { return e.adapter == adapter; });
    }
}

void Router::write_path_dword(unsigned adapter, unsigned off, std::uint32_t value, Time now) {
    Adapter& a = adapters_[adapter];
    const unsigned hop = off / kPathEntryDwords;
    std::uint32_t& r = a.path[off];
    if (off % kPathEntryDwords == 0) {
        const bool was_valid = PATH0_VALID::get(r) != 0;
        r = value & ~(0x3fu << 25);  // [30:25] reserved
        if (was_valid && PATH0_VALID::get(r) == 0) {
            // ref §6.5: a disabled path reports pending while packets drain.
            std::uint32_t& dw1 = a.path[off + 1];
            dw1 = PATH1_PENDING::set(dw1, 1);
            a.pending_reads[hop] = cfg_.pending_reads;
            a.pending_until[hop] = now + cfg_.pending_time;
            next_due_ = std::min(next_due_, a.pending_until[hop]);
        }
    } else {
        r = (r & PATH1_PENDING::kMask) | (value & ~PATH1_PENDING::kMask & ~(7u << 29));
    }
}

void Router::clear_paths(unsigned adapter) {
    Adapter& a = adapters_[adapter];
    // Entry 0 (control path credits) survives; every DMA path is gone.
    for (std::size_t i = kPathEntryDwords; i < a.path.size(); ++i) {
        a.path[i] = 0;
    }
}

}  // namespace tbv::emu
