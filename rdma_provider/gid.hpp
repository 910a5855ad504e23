// SPDX-License-Identifier: Apache-2.0
// Port GIDs and the RoCE-style GID mode.
//
// By default a port is an InfiniBand port: link layer IB, a LID (derived from the router UUID),
// and one GID, fe80::<node GUID>. Peers are addressed by LID; a GRH (is_global) is accepted and
// its DGID is only used when the DLID is 0.
//
// RoCE-style mode (TBV_GID_ADDR=a.b.c.d[,e.f.g.h…], one address per device in tbvN order): for
// applications that insist on GIDs (they address peers by GID, with DLID 0, as on Ethernet), the
// port reports link layer Ethernet, LID 0, and GID 0 = ::ffff:a.b.c.d, of type RoCE v2 (an
// IPv4-mapped GID). There is no Ethernet, IP or ARP underneath: the address is only a name. Each
// host publishes it in its XDomain properties (a "tbvaddr" service directory whose prtcstns is
// the address), so a DGID is resolved to the peer that announced it, or to this host for its own
// GID (loopback). An unknown DGID is EHOSTUNREACH at create_ah / modify_qp(RTR); an address
// without a GRH is EINVAL there, as on a RoCE port (no LIDs: every address handle is global).
//
// UD receive completions: a datagram sent through a global address handle arrives with a GRH
// (IBV_WC_GRH, the first 40 bytes of the receive buffer). In IB mode it is the IB GRH; in GID
// mode it has the form RoCE v2 hardware gives an IPv4 packet, the IPv4 header in bytes 20..39
// (src/verbs/qp_unreliable.cpp make_grh), so ibv_init_ah_from_wc answers by GID in both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <infiniband/verbs.h>

#include "usb4/properties.hpp"
#include "verbs/context.hpp"

namespace tbv::provider {

/// The tbvaddr service directory's UUID (random, generated once for this project; keep it).
inline constexpr hw::usb4::UuidDwords kAddrServiceUuid =
    *usb4::uuid_from_string("e3e9b9b2-334f-44fb-bf73-3b6c4e8aa2f0");
inline constexpr std::string_view kAddrServiceKey = "tbvaddr";

/// Parses TBV_GID_ADDR's value: comma-separated dotted IPv4 addresses (host byte order). An
/// empty entry keeps that device in IB mode (0). nullopt if malformed (`why` says where);
/// 0.0.0.0 is refused (it would mean "IB mode").
std::optional<std::vector<std::uint32_t>> parse_gid_addrs(const std::string& s, std::string& why);

/// The service directory announcing `ipv4` to peers.
usb4::ServiceInfo addr_service(std::uint32_t ipv4);

/// GID 0 of a port: ::ffff:a.b.c.d in RoCE mode, else fe80::<guid>.
ibv_gid port_gid(std::uint32_t ipv4, std::uint64_t guid) noexcept;

/// The IPv4 address inside an IPv4-mapped GID (::ffff:a.b.c.d), nullopt for any other GID.
std::optional<std::uint32_t> mapped_ipv4(const ibv_gid& gid) noexcept;

/// The LID of the host whose GID is `dgid` (this host's own GID: its own LID). 0 if none is
/// known: no link up to a peer that announced that address.
std::uint16_t resolve_gid(verbs::Context& core, std::uint32_t own_ipv4, std::uint64_t own_guid,
                          const ibv_gid& dgid);

}  // namespace tbv::provider
