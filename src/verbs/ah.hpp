// SPDX-License-Identifier: Apache-2.0
// Address handle: where a UD datagram goes (ibv_create_ah). Only the destination LID selects the
// peer here; the other address-vector fields are kept and reported back as given.
#pragma once

#include "tbv/verbs_types.hpp"
#include "verbs/pd.hpp"

namespace tbv::verbs {

class Ah {
public:
    Ah(Pd& pd, const AddressVector& av) noexcept : pd_(pd), av_(av) { pd_.retain(); }
    ~Ah() { pd_.release(); }
    Ah(const Ah&) = delete;
    Ah& operator=(const Ah&) = delete;

    const AddressVector& av() const noexcept { return av_; }
    Pd& pd() const noexcept { return pd_; }

private:
    Pd& pd_;
    AddressVector av_;
};

}  // namespace tbv::verbs
