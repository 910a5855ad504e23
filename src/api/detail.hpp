// SPDX-License-Identifier: Apache-2.0
// What stands behind a tbv::Device (include/tbv/tbv.hpp): the layer-0 device (an emulated host or
// a VFIO function), the verbs context on it and the one protection domain the API uses.
#pragma once

#include <memory>
#include <string>

#include "emu/host.hpp"
#include "hw/usb4_regs.hpp"
#include "tbv/verbs_types.hpp"
#include "verbs/context.hpp"
#include "vfio/vfio_device.hpp"

namespace tbv::detail {

/// Shared by the Device and every Mr, Cq and Qp made from it; the last one out closes it.
/// Members in set-up order: the context (its CM thread, rails, every verbs object) goes before
/// the device it drives.
struct DeviceImpl {
    std::string name;
    std::unique_ptr<emu::EmuHost> host;      ///< emulated: the host whose NHI is the device
    std::unique_ptr<vfio::VfioDevice> vfio;  ///< real hardware
    std::unique_ptr<verbs::Context> ctx;
    verbs::Pd* pd = nullptr;  ///< owned by ctx
};

/// The GID an Address carries: the router UUID, dwords in order, each little-endian.
verbs::Gid gid_of(const hw::usb4::UuidDwords& uuid) noexcept;
/// Whether `gid` (from gid_of, or all-zero = not given) names the device with LID `lid`.
bool gid_matches_lid(const verbs::Gid& gid, std::uint16_t lid) noexcept;

}  // namespace tbv::detail
