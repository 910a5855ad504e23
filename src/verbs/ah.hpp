// SPDX-License-Identifier: Apache-2.0
// Address handle: where a UD datagram goes (ibv_create_ah). Only the destination LID selects the
// peer here; the other address-vector fields are kept and reported back as given.
#pragma once

#include "tbv/verbs_types.hpp"
#include "transport/fabric.hpp"
#include "verbs/pd.hpp"

namespace tbv::verbs {

class Ah {
public:
    /// `peer` is resolved from av.dlid when the AH is created (control path), so posting a
    /// datagram never looks anything up or allocates.
    Ah(Pd& pd, const AddressVector& av, transport::Peer* peer) noexcept
        : pd_(pd), av_(av), peer_(peer) {
        pd_.retain();
    }
    ~Ah() { pd_.release(); }
    Ah(const Ah&) = delete;
    Ah& operator=(const Ah&) = delete;

    const AddressVector& av() const noexcept { return av_; }
    Pd& pd() const noexcept { return pd_; }
    transport::Peer* peer() const noexcept { return peer_; }

private:
    Pd& pd_;
    AddressVector av_;
    transport::Peer* peer_;
};

}  // namespace tbv::verbs
