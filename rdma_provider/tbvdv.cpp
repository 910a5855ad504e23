// SPDX-License-Identifier: Apache-2.0
// The exported tbvdv_* entry points (include/infiniband/tbvdv.h): the device list, and the verbs
// that libibverbs answers from sysfs or the kernel for every device, done for ours.
#include "infiniband/tbvdv.h"

#include <endian.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "private_abi.hpp"
#include "provider.hpp"

using tbv::provider::Context;
using tbv::provider::is_ours;
using tbv::provider::to_ctx;

namespace {

bool ours(ibv_context* context) {
    return context != nullptr && is_ours(context->device);
}

}  // namespace

extern "C" {

ibv_device** tbvdv_get_device_list(int* num_devices) {
    if (num_devices != nullptr) {
        *num_devices = 0;
    }
    if (tbv::provider::private_abi() == nullptr) {
        errno = EPROTONOSUPPORT;
        return nullptr;
    }
    try {
        const auto& devs = tbv::provider::devices();
        auto** list = static_cast<ibv_device**>(std::calloc(devs.size() + 1, sizeof(ibv_device*)));
        if (list == nullptr) {
            errno = ENOMEM;
            return nullptr;
        }
        for (std::size_t i = 0; i < devs.size(); ++i) {
            // One reference per list entry: ibv_free_device_list drops it.
            devs[i]->vdev.refcount.fetch_add(1);
            list[i] = &devs[i]->vdev.device;
        }
        if (num_devices != nullptr) {
            *num_devices = static_cast<int>(devs.size());
        }
        return list;
    } catch (...) {
        errno = ENOMEM;
        return nullptr;
    }
}

int tbvdv_is_tbv_device(ibv_device* device) {
    return is_ours(device) ? 1 : 0;
}

__be64 tbvdv_get_device_guid(ibv_device* device) {
    if (!is_ours(device)) {
        errno = EINVAL;
        return 0;
    }
    return htobe64(tbv::provider::to_device(device)->guid);
}

int tbvdv_query_gid(ibv_context* context, uint8_t port_num, int index, ibv_gid* gid) {
    if (!ours(context) || gid == nullptr || index < 0) {
        errno = EINVAL;
        return -1;
    }
    if (const int e =
            tbv::provider::query_gid(to_ctx(context), port_num, static_cast<unsigned>(index), *gid);
        e != 0) {
        errno = e;
        return -1;
    }
    return 0;
}

int tbvdv_query_gid_ex(ibv_context* context, uint32_t port_num, uint32_t gid_index,
                       ibv_gid_entry* entry, uint32_t flags) {
    if (!ours(context) || entry == nullptr || flags != 0) {
        return EINVAL;
    }
    ibv_gid gid{};
    if (const int e = tbv::provider::query_gid(to_ctx(context), port_num, gid_index, gid); e != 0) {
        return e;
    }
    *entry = ibv_gid_entry{};
    entry->gid = gid;
    entry->gid_index = gid_index;
    entry->port_num = port_num;
    // An IPv4-mapped GID is what RoCE v2 uses (gid.hpp); otherwise an IB GID.
    entry->gid_type =
        to_ctx(context).device().gid_ipv4 != 0 ? IBV_GID_TYPE_ROCE_V2 : IBV_GID_TYPE_IB;
    entry->ndev_ifindex = 0;
    return 0;
}

ssize_t tbvdv_query_gid_table(ibv_context* context, ibv_gid_entry* entries, size_t max_entries,
                              uint32_t flags) {
    if (!ours(context) || (entries == nullptr && max_entries > 0) || flags != 0) {
        return -EINVAL;
    }
    if (max_entries < 1) {
        return -EINVAL;  // the table has one entry (port 1, index 0)
    }
    const int e = tbvdv_query_gid_ex(context, 1, 0, &entries[0], 0);
    return e != 0 ? -e : 1;
}

int tbvdv_query_pkey(ibv_context* context, uint8_t port_num, int index, __be16* pkey) {
    if (!ours(context) || pkey == nullptr || port_num != 1 || index != 0) {
        errno = EINVAL;
        return -1;
    }
    *pkey = htobe16(tbv::provider::kDefaultPkey);
    return 0;
}

int tbvdv_get_pkey_index(ibv_context* context, uint8_t port_num, __be16 pkey) {
    if (!ours(context) || port_num != 1) {
        errno = EINVAL;
        return -1;
    }
    if (be16toh(pkey) != tbv::provider::kDefaultPkey) {
        errno = ENOENT;
        return -1;
    }
    return 0;
}

ibv_comp_channel* tbvdv_create_comp_channel(ibv_context* context) {
    if (!ours(context)) {
        errno = EINVAL;
        return nullptr;
    }
    Context& ctx = to_ctx(context);
    tbv::provider::CompChannel* c = nullptr;
    try {
        c = new tbv::provider::CompChannel();
        auto core = ctx.core().create_comp_channel();
        if (!core) {
            const int e = tbv::provider::to_errno(core.error());
            delete c;
            errno = e;
            return nullptr;
        }
        c->core = *core;
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            const int e = errno;
            (void)ctx.core().destroy_comp_channel(c->core);
            delete c;
            errno = e;
            return nullptr;
        }
        // Our end never blocks; the application's end behaves like the kernel's (blocking
        // unless it sets O_NONBLOCK itself).
        (void)::fcntl(fds[1], F_SETFL, O_NONBLOCK);
        c->ibv.context = context;
        c->ibv.fd = fds[0];
        c->ibv.refcnt = 0;
        c->write_fd = fds[1];
        ctx.add(c);
        return &c->ibv;
    } catch (...) {
        delete c;
        errno = ENOMEM;
        return nullptr;
    }
}

int tbvdv_destroy_comp_channel(ibv_comp_channel* channel) {
    // As ibv_destroy_comp_channel: 0 or a positive errno.
    if (channel == nullptr || !ours(channel->context)) {
        return EINVAL;
    }
    auto* c = tbv::provider::to_channel(channel);
    Context& ctx = to_ctx(channel->context);
    if (channel->refcnt != 0) {
        return EBUSY;  // CQs still use it
    }
    try {
        ctx.remove(c);  // waits for the service thread to leave it
        if (auto r = ctx.core().destroy_comp_channel(c->core); !r) {
            ctx.add(c);
            return tbv::provider::to_errno(r.error());
        }
    } catch (...) {
        return ENOMEM;
    }
    ::close(c->write_fd);
    ::close(channel->fd);
    delete c;
    return 0;
}

}  // extern "C"
