// SPDX-License-Identifier: Apache-2.0
// `tbv status`: the emulated stack, the controller snapshot and its text rendering.
#include "tools/status.hpp"

#include <fmt/core.h>

#include "hw/usb4_regs.hpp"
#include "usb4/uuid.hpp"

namespace tbv::tools {

namespace hu = hw::usb4;

// ---- EmuStack ----------------------------------------------------------------------------------

Result<std::unique_ptr<EmuStack>> EmuStack::create(emu::HostConfig host, usb4::CmOptions opts) {
    std::unique_ptr<EmuStack> s(new EmuStack());
    s->host_ = std::make_unique<emu::EmuHost>(std::move(host));
    auto n = nhi::Nhi::open(s->host_->nhi());
    if (!n) {
        return Failure{n.error()};
    }
    s->nhi_ = std::move(*n);
    auto r = nhi::ControlRing::create(*s->nhi_);
    if (!r) {
        return Failure{r.error()};
    }
    s->ring_ = std::move(*r);
    auto c = usb4::ControlChannel::create(*s->ring_);
    if (!c) {
        return Failure{c.error()};
    }
    s->ch_ = std::move(*c);
    auto cm = usb4::ConnectionManager::create(*s->nhi_, *s->ch_, std::move(opts));
    if (!cm) {
        return Failure{cm.error()};
    }
    s->cm_ = std::move(*cm);
    return s;
}

EmuStack::~EmuStack() {
    cm_.reset();
    ch_.reset();
    ring_.reset();
    nhi_.reset();
    host_.reset();
}

bool EmuStack::any_up() const {
    for (const auto& l : cm_->links()) {
        if (l.state == usb4::LinkState::up) {
            return true;
        }
    }
    return false;
}

bool EmuStack::settled() const {
    bool found = false;
    for (const auto& l : cm_->links()) {
        switch (l.state) {
            case usb4::LinkState::lane:
            case usb4::LinkState::uuid:
            case usb4::LinkState::properties:
            case usb4::LinkState::rails: return false;
            case usb4::LinkState::up:
            case usb4::LinkState::discovered: found = true; break;
            default: break;
        }
    }
    return found;
}

// ---- snapshot ----------------------------------------------------------------------------------

namespace {

std::string hex4(std::uint32_t v) {
    return fmt::format("{:04x}", v);
}

const char* lane_state_name(hu::LaneState s) {
    switch (s) {
        case hu::LaneState::disabled: return "disabled";
        case hu::LaneState::training: return "training";
        case hu::LaneState::cl0: return "CL0";
        case hu::LaneState::cl0s_tx: return "CL0s-tx";
        case hu::LaneState::cl0s_rx: return "CL0s-rx";
        case hu::LaneState::cl1: return "CL1";
        case hu::LaneState::cl2: return "CL2";
        case hu::LaneState::unplugged: return "unplugged";
    }
    return "?";
}

nlohmann::json lane_json(EmuStack& s, const usb4::AdapterInfo& a) {
    nlohmann::json j;
    if (!a.lane_cap) {
        j["error"] = "no lane capability";
        return j;
    }
    auto cs1 = s.channel().read1(0, hu::Space::adapter, a.number, *a.lane_cap + hu::LANE_ADP_CS_1);
    if (!cs1) {
        j["error"] = cs1.error().message();
        return j;
    }
    const auto state = static_cast<hu::LaneState>(hu::LANE1_STATE::get(*cs1));
    const bool up = hu::lane_up(static_cast<std::uint32_t>(state));
    j["state"] = lane_state_name(state);
    j["up"] = up;
    // Speed and width mean something only on a trained lane.
    j["speed_gbps"] =
        up ? nlohmann::json(usb4::lane_gbps(hu::LANE1_CURRENT_SPEED::get(*cs1))) : nlohmann::json();
    j["width"] = up ? nlohmann::json(hu::LANE1_CURRENT_WIDTH::get(*cs1)) : nlohmann::json();
    return j;
}

nlohmann::json peer_json(const usb4::Link& l) {
    nlohmann::json p;
    p["uuid"] = usb4::uuid_to_string(l.peer_uuid);
    if (!l.peer) {
        return p;
    }
    const auto& h = *l.peer;
    p["name"] = h.device_name;
    p["vendor_id"] = hex4(h.vendor_id);
    p["vendor_name"] = h.vendor_name;
    p["device_id"] = hex4(h.device_id);
    p["max_hop_id"] = h.max_hop_id;
    nlohmann::json svc = nlohmann::json::array();
    for (const auto& s : h.services) {
        svc.push_back({{"key", s.key},
                       {"uuid", usb4::uuid_to_string(s.uuid)},
                       {"protocol_id", s.prtcid},
                       {"protocol_version", s.prtcvers},
                       {"protocol_revision", s.prtcrevs},
                       {"settings", s.prtcstns}});
    }
    p["services"] = std::move(svc);
    return p;
}

nlohmann::json path_json(const std::optional<emu::Router::PathEntry>& e) {
    if (!e) {
        return nullptr;
    }
    return {{"valid", e->valid},
            {"out_adapter", e->out_adapter},
            {"out_hop", e->out_hop},
            {"credits", e->credits}};
}

nlohmann::json rail_json(EmuStack& s, const usb4::Link& l, const usb4::Rail& r) {
    auto& router = s.host().router();
    const unsigned nhi_adapter = s.cm().router().nhi_adapter();
    return {{"index", r.index},
            {"tx_ring", r.tx_ring},
            {"tx_hop", r.tx_hop},
            {"rx_hop", r.rx_hop},
            {"rx_ring", r.rx_ring},
            {"local_credits", r.local_credits},
            {"peer_credits", r.peer_credits},
            // The router's own path tables (ref §9.3): what the hardware will actually do.
            {"tx_path", path_json(router.path_entry(nhi_adapter, r.tx_ring))},
            {"rx_path", path_json(router.path_entry(l.adapter, r.rx_hop))}};
}

nlohmann::json counters_json(EmuStack& s) {
    const auto n = s.host().nhi().counters();
    const auto r = s.host().router().counters();
    const auto& cm = s.cm().counters();
    const auto& ch = s.channel().counters();
    return {
        {"nhi",
         {{"tx_frames", n.tx_frames},
          {"tx_bytes", n.tx_bytes},
          {"rx_frames", n.rx_frames},
          {"rx_bytes", n.rx_bytes},
          {"rx_overflow_drops", n.rx_overflow_drops},
          {"rx_disabled_drops", n.rx_disabled_drops},
          {"dma_faults", n.dma_faults}}},
        {"router",
         {{"data_tx", r.data_tx},
          {"data_rx", r.data_rx},
          {"data_no_path_drops", r.data_no_path_drops},
          {"data_link_down_drops", r.data_link_down_drops},
          {"ctl_from_nhi", r.ctl_from_nhi},
          {"ctl_forwarded", r.forwarded},
          {"ctl_from_peer", r.from_peer},
          {"ctl_drops", r.ctl_crc_drops + r.ctl_malformed_drops + r.ctl_unexpected_drops},
          {"events_sent", r.events_sent},
          {"events_resent", r.events_resent},
          {"event_acks", r.event_acks},
          {"link_ups", r.link_ups},
          {"link_downs", r.link_downs}}},
        {"cm",
         {{"events", cm.events},
          {"xd_requests_sent", cm.xd_requests_sent},
          {"xd_requests_served", cm.xd_requests_served},
          {"xd_unexpected", cm.xd_unexpected},
          {"xd_malformed", cm.xd_malformed},
          {"rail_offers", cm.rail_offers},
          {"path_writes", cm.path_writes}}},
        {"channel",
         {{"tx", ch.tx},
          {"rx", ch.rx},
          {"timeouts", ch.timeouts},
          {"retries", ch.retries},
          {"router_errors", ch.router_errors},
          {"dropped", ch.unmatched_dropped + ch.malformed_dropped + ch.inbox_overflow}}},
    };
}

}  // namespace

std::string adapter_type_name(std::uint32_t type) {
    switch (static_cast<hu::AdapterType>(type)) {
        case hu::AdapterType::inactive: return "inactive";
        case hu::AdapterType::lane: return "lane";
        case hu::AdapterType::nhi: return "NHI";
        case hu::AdapterType::dp_in: return "DP IN";
        case hu::AdapterType::dp_out: return "DP OUT";
        case hu::AdapterType::pcie_down: return "PCIe down";
        case hu::AdapterType::pcie_up: return "PCIe up";
        case hu::AdapterType::usb3_down: return "USB3 down";
        case hu::AdapterType::usb3_up: return "USB3 up";
    }
    return fmt::format("type 0x{:06x}", type);
}

nlohmann::json status_json(EmuStack& s, std::string_view cable) {
    const auto& cm = s.cm();
    const auto& rt = cm.router();
    const auto id = s.host().nhi().identity();
    nlohmann::json j;
    j["host"] = s.host().name();
    j["controller"] = s.host().nhi().name();
    j["emulated"] = true;
    j["cable"] = std::string(cable);
    j["nhi"] = {
        {"vendor", hex4(id.vendor)}, {"device", hex4(id.device)}, {"h_rings", s.nhi().hop_count()}};
    j["router"] = {{"vendor", hex4(rt.vendor())},
                   {"device", hex4(rt.device())},
                   {"uid", fmt::format("{:016x}", rt.uid())},
                   {"uuid", usb4::uuid_to_string(rt.uuid())},
                   {"nhi_adapter", rt.nhi_adapter()},
                   {"dma_credits", rt.ba_max_hi()}};

    nlohmann::json adapters = nlohmann::json::array();
    for (const auto& a : rt.adapters()) {
        nlohmann::json aj{{"number", a.number},
                          {"type", adapter_type_name(a.type)},
                          {"max_in_hop", a.max_in_hop},
                          {"max_out_hop", a.max_out_hop}};
        if (a.is_lane()) {
            aj["lane"] = lane_json(s, a);
        }
        adapters.push_back(std::move(aj));
    }
    j["adapters"] = std::move(adapters);

    nlohmann::json links = nlohmann::json::array();
    for (const auto& l : cm.links()) {
        nlohmann::json lj{
            {"adapter", l.adapter},
            {"state", std::string(usb4::to_string(l.state))},
            {"error", l.error ? nlohmann::json(l.error.message()) : nlohmann::json()}};
        const bool has_peer = l.state == usb4::LinkState::properties ||
                              l.state == usb4::LinkState::rails || l.state == usb4::LinkState::up ||
                              l.state == usb4::LinkState::discovered;
        lj["peer"] = has_peer ? peer_json(l) : nlohmann::json();
        nlohmann::json rails = nlohmann::json::array();
        for (const auto& r : l.rails) {
            rails.push_back(rail_json(s, l, r));
        }
        lj["rails"] = std::move(rails);
        links.push_back(std::move(lj));
    }
    j["links"] = std::move(links);
    j["counters"] = counters_json(s);
    return j;
}

// ---- text --------------------------------------------------------------------------------------

namespace {

std::string str(const nlohmann::json& j) {
    if (j.is_null()) {
        return "-";
    }
    return j.is_string() ? j.get<std::string>() : j.dump();
}

std::string path_text(const nlohmann::json& p) {
    if (p.is_null()) {
        return "absent";
    }
    if (!p["valid"].get<bool>()) {
        return "invalid";
    }
    return fmt::format("→ adapter {} HopID {}, {} credits", str(p["out_adapter"]),
                       str(p["out_hop"]), str(p["credits"]));
}

}  // namespace

std::string render_status(const nlohmann::json& c) {
    std::string o;
    const auto& n = c["nhi"];
    const auto& r = c["router"];
    o += fmt::format("{} ({}{}, NHI {}:{}, {} rings)\n", str(c["controller"]), str(c["host"]),
                     c["emulated"].get<bool>() ? ", emulated" : "", str(n["vendor"]),
                     str(n["device"]), str(n["h_rings"]));
    if (!c["cable"].get<std::string>().empty()) {
        o += fmt::format("  cable      {}\n", str(c["cable"]));
    }
    o += fmt::format("  router     {}:{}  UID {}  NHI adapter {}  DMA credits {}\n",
                     str(r["vendor"]), str(r["device"]), str(r["uid"]), str(r["nhi_adapter"]),
                     str(r["dma_credits"]));
    o += fmt::format("  UUID       {}\n", str(r["uuid"]));
    o += "  adapters\n";
    for (const auto& a : c["adapters"]) {
        std::string line =
            fmt::format("    {:>2}  {:<10} HopIDs in {:>2} out {:>2}", str(a["number"]),
                        str(a["type"]), str(a["max_in_hop"]), str(a["max_out_hop"]));
        if (a.contains("lane")) {
            const auto& l = a["lane"];
            if (l.contains("error")) {
                line += "  lane: " + str(l["error"]);
            } else if (l["up"].get<bool>()) {
                line += fmt::format("  {} {} Gb/s x{}", str(l["state"]), str(l["speed_gbps"]),
                                    str(l["width"]));
            } else {
                line += "  " + str(l["state"]);
            }
        }
        o += line + "\n";
    }
    for (const auto& l : c["links"]) {
        o += fmt::format("  USB4 port (lane adapter {}): {}", str(l["adapter"]), str(l["state"]));
        if (!l["error"].is_null()) {
            o += " (" + str(l["error"]) + ")";
        }
        o += "\n";
        const auto& p = l["peer"];
        if (!p.is_null()) {
            o += fmt::format("    peer     {}", str(p["uuid"]));
            if (p.contains("name")) {
                o += fmt::format("  \"{}\"  vendor {} ({})  device {}  max HopID {}",
                                 str(p["name"]), str(p["vendor_id"]), str(p["vendor_name"]),
                                 str(p["device_id"]), str(p["max_hop_id"]));
            }
            o += "\n";
            if (p.contains("services")) {
                for (const auto& s : p["services"]) {
                    o += fmt::format("    service  {} {}  protocol {} v{} r{} settings {}\n",
                                     str(s["key"]), str(s["uuid"]), str(s["protocol_id"]),
                                     str(s["protocol_version"]), str(s["protocol_revision"]),
                                     str(s["settings"]));
                }
            }
        }
        for (const auto& rl : l["rails"]) {
            o += fmt::format(
                "    rail {}   TX ring {} → HopID {}, HopID {} → RX ring {}; credits: we post {}, "
                "peer posts {}\n",
                str(rl["index"]), str(rl["tx_ring"]), str(rl["tx_hop"]), str(rl["rx_hop"]),
                str(rl["rx_ring"]), str(rl["local_credits"]), str(rl["peer_credits"]));
            o += fmt::format("             router path NHI adapter {} HopID {} {}\n",
                             str(r["nhi_adapter"]), str(rl["tx_ring"]), path_text(rl["tx_path"]));
            o += fmt::format("             router path lane adapter {} HopID {} {}\n",
                             str(l["adapter"]), str(rl["rx_hop"]), path_text(rl["rx_path"]));
        }
    }
    const auto& k = c["counters"];
    const auto& kn = k["nhi"];
    const auto& kr = k["router"];
    const auto& kc = k["cm"];
    const auto& kh = k["channel"];
    o += "  counters\n";
    o += fmt::format(
        "    NHI      TX {} frames ({} bytes), RX {} frames ({} bytes), RX overflow {}, "
        "RX disabled {}, DMA faults {}\n",
        str(kn["tx_frames"]), str(kn["tx_bytes"]), str(kn["rx_frames"]), str(kn["rx_bytes"]),
        str(kn["rx_overflow_drops"]), str(kn["rx_disabled_drops"]), str(kn["dma_faults"]));
    o += fmt::format(
        "    router   data TX {} RX {}, dropped: no path {} link down {}; control from NHI {} "
        "forwarded {} from peer {} dropped {}; events {} (+{} re-sent) acked {}; link up {} down "
        "{}\n",
        str(kr["data_tx"]), str(kr["data_rx"]), str(kr["data_no_path_drops"]),
        str(kr["data_link_down_drops"]), str(kr["ctl_from_nhi"]), str(kr["ctl_forwarded"]),
        str(kr["ctl_from_peer"]), str(kr["ctl_drops"]), str(kr["events_sent"]),
        str(kr["events_resent"]), str(kr["event_acks"]), str(kr["link_ups"]),
        str(kr["link_downs"]));
    o += fmt::format(
        "    CM       events {}, XDomain requests sent {} served {}, unexpected {}, malformed {}, "
        "rail offers {}, path writes {}\n",
        str(kc["events"]), str(kc["xd_requests_sent"]), str(kc["xd_requests_served"]),
        str(kc["xd_unexpected"]), str(kc["xd_malformed"]), str(kc["rail_offers"]),
        str(kc["path_writes"]));
    o += fmt::format(
        "    channel  TX {} RX {}, timeouts {}, retries {}, router errors {}, dropped {}\n",
        str(kh["tx"]), str(kh["rx"]), str(kh["timeouts"]), str(kh["retries"]),
        str(kh["router_errors"]), str(kh["dropped"]));
    return o;
}

}  // namespace tbv::tools
