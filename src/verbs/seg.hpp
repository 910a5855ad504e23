// SPDX-License-Identifier: Apache-2.0
// A scatter/gather element once resolved at post time: L_Key, PD and bounds checked, the host
// address to copy to or from, and the MR it keeps referenced until the WR completes.
#pragma once

#include <cstdint>

#include "tbv/verbs_types.hpp"
#include "verbs/mr.hpp"

namespace tbv::verbs {

struct Seg {
    std::byte* host = nullptr;
    std::uint32_t length = 0;
    Mr* mr = nullptr;
};

/// Resolves a receive WR's SGEs (local write needed) into `segs`. On a bad SGE, references taken
/// so far are dropped, nseg is 0 and false is returned (the WR completes with LOC_PROT_ERR).
inline bool resolve_recv(MrTable& mrs, const Pd& pd, const RecvWr& wr, Seg* segs,
                         std::uint32_t& nseg, std::uint32_t& total) noexcept {
    nseg = 0;
    total = 0;
    for (std::uint32_t i = 0; i < wr.num_sge; ++i) {
        const Sge& g = wr.sg_list[i];
        const AccessCheck c = mrs.check_local(g.lkey, pd, g.addr, g.length, kAccessLocalWrite);
        if (!c) {
            for (std::uint32_t k = 0; k < nseg; ++k) {
                segs[k].mr->release();
            }
            nseg = 0;
            total = 0;
            return false;
        }
        if (c.target.mr != nullptr) {
            c.target.mr->acquire();
        }
        segs[nseg++] = {c.target.host, g.length, c.target.mr};
        total += g.length;
    }
    return true;
}

}  // namespace tbv::verbs
