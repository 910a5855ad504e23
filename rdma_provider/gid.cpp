// SPDX-License-Identifier: Apache-2.0
// Port GIDs and the RoCE-style GID mode (gid.hpp).
#include "gid.hpp"

#include <endian.h>

#include <cstring>

#include "transport/fabric.hpp"

namespace tbv::provider {

std::optional<std::vector<std::uint32_t>> parse_gid_addrs(const std::string& s, std::string& why) {
    std::vector<std::uint32_t> out;
    std::size_t pos = 0;
    for (;;) {
        const std::size_t comma = s.find(',', pos);
        const std::string item =
            s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (item.empty()) {
            out.push_back(0);  // this device stays in IB mode
        } else {
            std::uint32_t addr = 0;
            unsigned octets = 0;
            std::size_t i = 0;
            bool bad = false;
            while (!bad && octets < 4) {
                unsigned v = 0;
                std::size_t digits = 0;
                while (i < item.size() && item[i] >= '0' && item[i] <= '9' && digits < 4) {
                    v = v * 10 + static_cast<unsigned>(item[i] - '0');
                    ++i;
                    ++digits;
                }
                bad = digits == 0 || digits > 3 || v > 255;
                addr = (addr << 8) | v;
                ++octets;
                if (!bad && octets < 4) {
                    bad = i >= item.size() || item[i] != '.';
                    ++i;
                }
            }
            if (bad || i != item.size() || addr == 0) {
                why = "'" + item + "' is not a dotted IPv4 address (a.b.c.d, not 0.0.0.0)";
                return std::nullopt;
            }
            out.push_back(addr);
        }
        if (comma == std::string::npos) {
            break;
        }
        pos = comma + 1;
    }
    return out;
}

usb4::ServiceInfo addr_service(std::uint32_t ipv4) {
    usb4::ServiceInfo s;
    s.key = std::string(kAddrServiceKey);
    s.uuid = kAddrServiceUuid;
    s.prtcid = 1;
    s.prtcvers = 1;
    s.prtcrevs = 0;
    s.prtcstns = ipv4;
    return s;
}

ibv_gid port_gid(std::uint32_t ipv4, std::uint64_t guid) noexcept {
    ibv_gid g{};
    if (ipv4 != 0) {
        // ::ffff:a.b.c.d (RFC 4291 §2.5.5.2), the form RoCE v2 uses for IPv4 addresses.
        g.raw[10] = 0xff;
        g.raw[11] = 0xff;
        const std::uint32_t be = htobe32(ipv4);
        std::memcpy(&g.raw[12], &be, 4);
    } else {
        // The IB port GID: link-local subnet prefix fe80::/64, then the port GUID (= node GUID).
        g.global.subnet_prefix = htobe64(0xfe80'0000'0000'0000ull);
        g.global.interface_id = htobe64(guid);
    }
    return g;
}

std::optional<std::uint32_t> mapped_ipv4(const ibv_gid& gid) noexcept {
    for (unsigned i = 0; i < 10; ++i) {
        if (gid.raw[i] != 0) {
            return std::nullopt;
        }
    }
    if (gid.raw[10] != 0xff || gid.raw[11] != 0xff) {
        return std::nullopt;
    }
    std::uint32_t be = 0;
    std::memcpy(&be, &gid.raw[12], 4);
    return be32toh(be);
}

std::uint16_t resolve_gid(verbs::Context& core, std::uint32_t own_ipv4, std::uint64_t own_guid,
                          const ibv_gid& dgid) {
    const ibv_gid own = port_gid(own_ipv4, own_guid);
    if (std::memcmp(own.raw, dgid.raw, sizeof own.raw) == 0) {
        return core.lid();  // loopback
    }
    const std::optional<std::uint32_t> addr = mapped_ipv4(dgid);
    if (!addr || *addr == 0) {
        return 0;
    }
    std::uint16_t lid = 0;
    core.with_cm([&](const usb4::ConnectionManager& cm) {
        for (const usb4::Link& l : cm.links()) {
            if (l.state != usb4::LinkState::up || !l.peer) {
                continue;
            }
            for (const usb4::ServiceInfo& s : l.peer->services) {
                if (s.key == kAddrServiceKey && s.uuid == kAddrServiceUuid && s.prtcstns == *addr) {
                    lid = transport::lid_of(l.peer_uuid);
                    return;
                }
            }
        }
    });
    return lid;
}

}  // namespace tbv::provider
