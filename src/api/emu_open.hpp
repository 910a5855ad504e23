// SPDX-License-Identifier: Apache-2.0
// Opening an emulated host on a shared-memory cable, shared by the embedding API (src/api) and the
// libibverbs provider (rdma_provider/): the "<cable>[/a|/b]" spelling of TBV_EMU and emu:<...>
// names, the host's identity, and the order of bringing it up (verbs context first, then the
// cable end, so the connection manager sees the peer arrive).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "emu/host.hpp"
#include "emu/shm_cable.hpp"
#include "tbv/result.hpp"
#include "verbs/context.hpp"

namespace tbv::detail {

/// A cable name and the end to take ("mycable", "mycable/a", "mycable/b").
struct EmuCableSpec {
    std::string cable;
    emu::ShmSide side = emu::ShmSide::any;
};

/// Parses "<cable>[/a|/b]" (what follows "emu:", or TBV_EMU's value). EINVAL for an empty cable
/// name, a '/' inside it or an end other than a or b; `detail` then says which.
Result<EmuCableSpec> parse_emu_spec(std::string_view spec, std::string& detail);

/// A router UID for a new emulated host. Two hosts on one cable need distinct UIDs (their UUIDs
/// and LIDs derive from them), in two processes or in one: Linux's vendor prefix, random low half.
std::uint64_t random_emu_uid();

/// This machine's host name (what XDomain discovery announces), "tbverbs-emu" if it has none.
std::string emu_host_name();

/// An emulated host whose NHI carries a verbs context, USB4 port 0 plugged into a cable end.
/// Members in set-up order: the context (CM thread, rails) goes before the host it drives.
struct EmuDevice {
    std::unique_ptr<emu::EmuHost> host;
    std::unique_ptr<verbs::Context> ctx;
};

/// Brings up host `name` with router UID `uid`, opens a verbs context on its NHI with `options`
/// (its CM host name defaults to emu_host_name()), then plugs port 0 into `spec`'s cable. EBUSY
/// when both ends are taken; `detail` says what failed.
Result<EmuDevice> open_emu_device(const EmuCableSpec& spec, std::string name, std::uint64_t uid,
                                  verbs::ContextOptions options, std::string& detail);

}  // namespace tbv::detail
