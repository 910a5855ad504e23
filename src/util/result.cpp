// SPDX-License-Identifier: Apache-2.0
// Message text for tbv::Errc.
#include "tbv/result.hpp"

namespace tbv {
namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "tbv"; }

    std::string message(int ev) const override {
        switch (static_cast<Errc>(ev)) {
            case Errc::ok: return "success";
            case Errc::device_gone: return "device is gone (register reads return all-ones)";
            case Errc::iommu_fault: return "device access to an unmapped or read-only IOVA";
            case Errc::ring_unavailable: return "ring number not provided by this controller";
            case Errc::ring_full: return "ring has no free descriptor";
            case Errc::crc_mismatch: return "CRC-32C mismatch";
            case Errc::malformed: return "malformed input";
            case Errc::timeout: return "timed out";
            case Errc::link_down: return "link is down";
            case Errc::hop_in_use: return "HopID already in use";
            case Errc::not_supported: return "not supported by this device";
            case Errc::router_error: return "router answered with an error packet";
        }
        return "unknown tbv error";
    }
};

}  // namespace

const std::error_category& tbv_category() noexcept {
    static const Category category;
    return category;
}

}  // namespace tbv
