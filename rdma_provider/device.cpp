// SPDX-License-Identifier: Apache-2.0
// Devices: discovery, opening (the shared Instance), and the device ops libibverbs calls
// (alloc_context with cmd_fd = -1 because our devices have no sysfs entry, uninit_device).
//
// Discovery, once per process, in this order (names tbv0, tbv1, … follow it):
//  1. the emulated host of TBV_EMU=<cable>[/a|/b], if set: a program told `-d tbv0` with TBV_EMU
//     gets the emulator on any machine, whatever hardware it has;
//  2. every USB4 host interface (PCI class 0x0c0340) bound to vfio-pci, by PCI address, unless
//     TBV_VFIO=0. Listing one opens nothing (another process may be using it); whether a peer is
//     connected shows in the port state once it is opened.
// No device and no error message when there is neither.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "gid.hpp"
#include "private_abi.hpp"
#include "provider.hpp"
#include "util/crc32c.hpp"
#include "vfio/error.hpp"
#include "vfio/pci_sysfs.hpp"
#include "vfio/vfio_device.hpp"

namespace tbv::provider {

namespace {

void copy_name(char* dst, std::size_t cap, const std::string& s) {
    const std::size_t n = std::min(cap - 1, s.size());
    std::memcpy(dst, s.data(), n);
    dst[n] = '\0';
}

Device* make_device(unsigned index, std::string spec, const std::string& node, std::uint64_t guid) {
    auto* d = new Device();
    ibv_device& ib = d->vdev.device;
    ib.node_type = IBV_NODE_CA;
    ib.transport_type = IBV_TRANSPORT_IB;
    const std::string name = "tbv" + std::to_string(index);
    copy_name(ib.name, sizeof ib.name, name);
    // dev_name names the node under /dev/infiniband that UCX checks before it uses a device:
    // stable per function (tbvN follows discovery order), linked there by `tbv bind` / `tbv
    // devnode` (vfio/pci_sysfs.hpp). libibverbs itself never opens it (cmd_fd is -1).
    copy_name(ib.dev_name, sizeof ib.dev_name, node);
    // dev_path and ibdev_path stay empty: there is no sysfs node (ibv_devinfo's board_id read of
    // "<ibdev_path>/board_id" finds nothing and is skipped).
    d->vdev.ops = &kDeviceOps;
    d->vdev.refcount.store(1);  // ours, never dropped: a device outlives every list and context
    d->vdev.sysfs = nullptr;
    d->vdev.core_support = pabi34::kCoreSupportOptionalMrAccess;
    d->spec = std::move(spec);
    d->guid = guid;
    return d;
}

/// A node GUID for a VFIO function, stable across runs on this machine: the router's UID is
/// only known once the device is opened (the connection manager reads it), and listing must not
/// open anything. Bits 63..56 are 0x02, as in a locally administered EUI-64.
std::uint64_t vfio_guid(const std::string& bdf) {
    std::string seed = bdf;
    if (std::ifstream f("/etc/machine-id"); f) {
        std::string id;
        std::getline(f, id);
        seed += id;
    }
    const auto bytes = std::as_bytes(std::span(seed.data(), seed.size()));
    const std::uint64_t hi = util::crc32c(bytes, 0x7462'7600u);
    const std::uint64_t lo = util::crc32c(bytes);
    return (std::uint64_t{0x02} << 56) | ((hi & 0x00ff'ffffu) << 32) | lo;
}

std::vector<Device*> discover() {
    std::vector<Device*> out;
    if (const char* emu = std::getenv("TBV_EMU"); emu != nullptr && *emu != '\0') {
        std::string why;
        if (auto spec = detail::parse_emu_spec(emu, why); spec) {
            out.push_back(make_device(static_cast<unsigned>(out.size()), std::string("emu:") + emu,
                                      vfio::sysfs::kEmuDevnodeName, detail::random_emu_uid()));
        } else {
            std::fprintf(stderr, "tbverbs: TBV_EMU='%s' ignored: %s\n", emu, why.c_str());
        }
    }
    const char* use_vfio = std::getenv("TBV_VFIO");
    if (use_vfio == nullptr || std::strcmp(use_vfio, "0") != 0) {
        for (const std::string& bdf : vfio::sysfs::vfio_bound_usb4_hosts()) {
            out.push_back(make_device(static_cast<unsigned>(out.size()), "vfio:" + bdf,
                                      vfio::sysfs::devnode_name(bdf), vfio_guid(bdf)));
        }
    }
    // The RoCE-style GID mode: one address per device, in this order (gid.hpp).
    if (const char* addrs = std::getenv("TBV_GID_ADDR"); addrs != nullptr && *addrs != '\0') {
        std::string why;
        if (auto v = parse_gid_addrs(addrs, why)) {
            for (std::size_t i = 0; i < v->size() && i < out.size(); ++i) {
                out[i]->gid_ipv4 = (*v)[i];
            }
        } else {
            std::fprintf(stderr, "tbverbs: TBV_GID_ADDR='%s' ignored: %s\n", addrs, why.c_str());
        }
    }
    return out;
}

}  // namespace

const std::vector<Device*>& devices() {
    static const std::vector<Device*> list = discover();
    return list;
}

bool is_ours(const ibv_device* dev) noexcept {
    return dev != nullptr && reinterpret_cast<const pabi34::verbs_device*>(dev)->ops == &kDeviceOps;
}

Device* to_device(ibv_device* dev) noexcept {
    return reinterpret_cast<Device*>(dev);
}

std::shared_ptr<Instance> Device::acquire(int& err) {
    std::lock_guard g(mu);
    if (auto inst = open.lock()) {
        return inst;
    }
    verbs::ContextOptions options;
    if (gid_ipv4 != 0) {
        options.cm.host.services.push_back(addr_service(gid_ipv4));  // peers resolve our GID
    }
    // The GID ibv_query_gid reports: UD datagrams sent with a GRH carry it, received GRHs name
    // it as their DGID, in the form its type (RoCE v2 in GID mode) gives them.
    const ibv_gid gid = port_gid(gid_ipv4, guid);
    std::memcpy(options.gid.data(), gid.raw, options.gid.size());
    options.gid_roce_v2 = gid_ipv4 != 0;
    auto inst = std::make_shared<Instance>();
    constexpr std::string_view kVfio = "vfio:";
    if (std::string_view(spec).starts_with(kVfio)) {
        const std::string bdf = spec.substr(kVfio.size());
        auto dev = vfio::VfioDevice::open(bdf);
        if (!dev) {
            err = to_errno(dev.error());
            std::fprintf(stderr, "tbverbs: %s (%s): %s: %s\n", vdev.device.name, bdf.c_str(),
                         dev.error().message().c_str(), vfio::last_error_detail().c_str());
            return nullptr;
        }
        options.cm.host.device_name = detail::emu_host_name();  // this machine's host name
        auto ctx = verbs::Context::open(**dev, std::move(options));
        if (!ctx) {
            err = to_errno(ctx.error());
            std::fprintf(stderr, "tbverbs: %s (%s): cannot bring up the USB4 stack: %s\n",
                         vdev.device.name, bdf.c_str(), ctx.error().message().c_str());
            return nullptr;
        }
        inst->vfio = std::move(*dev);
        inst->vfio_ctx = std::move(*ctx);
        open = inst;
        return inst;
    }
    constexpr std::string_view kEmu = "emu:";
    std::string why;
    auto spec_r = detail::parse_emu_spec(std::string_view(spec).substr(kEmu.size()), why);
    if (!spec_r) {
        err = to_errno(spec_r.error());
        std::fprintf(stderr, "tbverbs: %s: %s\n", vdev.device.name, why.c_str());
        return nullptr;
    }
    auto emu = detail::open_emu_device(
        *spec_r, std::string(vdev.device.name) + "-" + std::to_string(::getpid()), guid,
        std::move(options), why);
    if (!emu) {
        err = to_errno(emu.error());
        std::fprintf(stderr, "tbverbs: %s (%s): %s: %s\n", vdev.device.name, spec.c_str(),
                     emu.error().message().c_str(), why.c_str());
        return nullptr;
    }
    inst->emu = std::move(*emu);
    open = inst;
    return inst;
}

int to_errno(std::error_code ec) noexcept {
    if (!ec) {
        return 0;
    }
    if (ec.category() == tbv_category()) {
        switch (static_cast<Errc>(ec.value())) {
            case Errc::ok: return 0;
            case Errc::device_gone: return ENODEV;
            case Errc::iommu_fault: return EFAULT;
            case Errc::ring_unavailable:
            case Errc::hop_in_use: return EBUSY;
            case Errc::ring_full: return ENOMEM;
            case Errc::malformed: return EINVAL;
            case Errc::timeout: return ETIMEDOUT;
            case Errc::link_down: return ENETDOWN;
            case Errc::not_supported: return EOPNOTSUPP;
            case Errc::crc_mismatch:
            case Errc::router_error: return EIO;
        }
        return EIO;
    }
    return ec.value() > 0 ? ec.value() : EIO;
}

// ---- device ops ---------------------------------------------------------------------------------

namespace {

verbs_context* alloc_context(ibv_device* ibdev, int cmd_fd, void* /*private_data*/) noexcept {
    const PrivateAbi* abi = private_abi();
    if (abi == nullptr) {
        errno = EPROTONOSUPPORT;
        return nullptr;
    }
    Device* dev = to_device(ibdev);
    int err = ENOMEM;
    std::shared_ptr<Instance> inst;
    try {
        inst = dev->acquire(err);
    } catch (...) {
        inst.reset();
        err = ENOMEM;
    }
    if (!inst) {
        errno = err;
        return nullptr;
    }
    // _verbs_init_and_alloc_context takes the context's offset as a pointer (driver.h's macro).
    auto* shell = static_cast<ContextShell*>(abi->init_and_alloc_context(
        ibdev, cmd_fd, sizeof(ContextShell),
        reinterpret_cast<verbs_context*>(offsetof(ContextShell, vctx)), 0));
    if (shell == nullptr) {
        return nullptr;  // errno from libibverbs
    }
    try {
        shell->impl = new Context(shell, dev, std::move(inst));
    } catch (...) {
        abi->uninit_context(&shell->vctx);
        std::free(shell);
        errno = ENOMEM;
        return nullptr;
    }
    abi->set_ops(&shell->vctx, &kContextOps);
    shell->vctx.context.num_comp_vectors = 1;
    if (const int e = shell->impl->start(); e != 0) {
        delete shell->impl;
        abi->uninit_context(&shell->vctx);
        std::free(shell);
        errno = e;
        return nullptr;
    }
    return &shell->vctx;
}

void uninit_device(pabi34::verbs_device* /*dev*/) noexcept {
    // Never reached: every device keeps the reference it was made with (make_device).
}

}  // namespace

const pabi34::verbs_device_ops kDeviceOps = {
    .name = "tbverbs",
    .match_min_abi_version = 0,
    .match_max_abi_version = 0,
    .match_table = nullptr,
    .static_providers = nullptr,
    .match_device = nullptr,
    .alloc_context = alloc_context,
    .import_context = nullptr,
    .alloc_device = nullptr,
    .uninit_device = uninit_device,
};

}  // namespace tbv::provider
