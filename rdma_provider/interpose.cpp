// SPDX-License-Identifier: Apache-2.0
// The LD_PRELOAD interposer (libtbverbs-preload.so; `tbv run -- CMD` preloads it): unmodified
// programs see tbverbs devices through the ordinary verbs. It defines exactly the public entry
// points that libibverbs answers from sysfs or the kernel for every device
// (docs/rdma-core/provider-abi.md §1.5 and §5): for a tbverbs device or context it answers through
// the provider's tbvdv_* twins, for any other it forwards to libibverbs' own definition (found by
// symbol version with dlvsym(RTLD_NEXT)), so programs keep working with real devices.
//
// The definitions are unversioned; a program's references to versioned symbols
// (ibv_get_device_list@IBVERBS_1.1 …) bind to them because a preloaded object comes first in the
// lookup order. libibverbs' own internal calls to these go through its PLT, so they are caught too
// (ibv_init_ah_from_wc's GID queries, ibv_import_device's device list).
#include <dlfcn.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "infiniband/tbvdv.h"

#undef ibv_get_device_list  // verbs.h routes it through an inline wrapper

extern "C" {
// Private to libibverbs (driver.h, IBVERBS_PRIVATE_34) but called by ibv_devinfo.
enum ibv_gid_type_sysfs { IBV_GID_TYPE_SYSFS_IB_ROCE_V1, IBV_GID_TYPE_SYSFS_ROCE_V2 };
int ibv_query_gid_type(struct ibv_context* context, uint8_t port_num, unsigned int index,
                       enum ibv_gid_type_sysfs* type);
}

namespace {

/// libibverbs' definition of `name` at `version`, resolved once.
template <typename Fn>
Fn next(const char* name, const char* version) {
    return reinterpret_cast<Fn>(::dlvsym(RTLD_NEXT, name, version));
}

#define TBV_NEXT(fn, version)                                   \
    static const auto real = next<decltype(&fn)>(#fn, version); \
    if (real == nullptr) {                                      \
        errno = ENOSYS;                                         \
    }

bool ours(ibv_context* c) {
    return c != nullptr && tbvdv_is_tbv_device(c->device) != 0;
}

/// Set while ibv_import_device runs on this thread: it looks up a kernel char device among the
/// listed devices through their sysfs data, which ours do not have (a NULL dereference in
/// libibverbs v44–v64), so the nested device list must not contain them.
thread_local bool t_hide_ours = false;

}  // namespace

extern "C" {

ibv_device** ibv_get_device_list(int* num_devices) {
    TBV_NEXT(ibv_get_device_list, "IBVERBS_1.1");
    int n_real = 0;
    ibv_device** real_list = real != nullptr ? real(&n_real) : nullptr;
    const int real_errno = errno;
    if (t_hide_ours) {
        if (num_devices != nullptr) {
            *num_devices = n_real;
        }
        return real_list;
    }
    int n_ours = 0;
    ibv_device** our_list = tbvdv_get_device_list(&n_ours);
    if (our_list == nullptr || n_ours == 0) {
        const bool we_answered = our_list != nullptr;  // not refused (another private ABI)
        std::free(our_list);
        if (num_devices != nullptr) {
            *num_devices = real_list != nullptr ? n_real : 0;
        }
        if (real_list == nullptr && real_errno == ENOSYS && we_answered) {
            // libibverbs found no kernel RDMA stack, and we have no device either: an empty
            // list, as on a machine with RDMA but no device (ibv_devices prints its header, not
            // "Failed to get IB devices list: Function not implemented"). Our devices need no
            // kernel stack, so its absence is not an error once we are loaded.
            return static_cast<ibv_device**>(std::calloc(1, sizeof(ibv_device*)));
        }
        errno = real_errno;
        return real_list;  // nothing of ours: what libibverbs says
    }
    // Real devices first, ours after. The entries' references move into the merged array, so
    // the two originals are freed with free(), not ibv_free_device_list().
    const int n = n_real + n_ours;
    auto** merged = static_cast<ibv_device**>(
        std::calloc(static_cast<std::size_t>(n) + 1, sizeof(ibv_device*)));
    if (merged == nullptr) {
        std::free(our_list);  // our references leak: harmless, devices live forever
        if (num_devices != nullptr) {
            *num_devices = real_list != nullptr ? n_real : 0;
        }
        return real_list;
    }
    for (int i = 0; i < n_real; ++i) {
        merged[i] = real_list[i];
    }
    for (int i = 0; i < n_ours; ++i) {
        merged[n_real + i] = our_list[i];
    }
    std::free(real_list);
    std::free(our_list);
    if (num_devices != nullptr) {
        *num_devices = n;
    }
    return merged;
}

__be64 ibv_get_device_guid(ibv_device* device) {
    if (tbvdv_is_tbv_device(device) != 0) {
        return tbvdv_get_device_guid(device);
    }
    TBV_NEXT(ibv_get_device_guid, "IBVERBS_1.1");
    return real != nullptr ? real(device) : 0;
}

int ibv_query_gid(ibv_context* context, uint8_t port_num, int index, ibv_gid* gid) {
    if (ours(context)) {
        return tbvdv_query_gid(context, port_num, index, gid);
    }
    TBV_NEXT(ibv_query_gid, "IBVERBS_1.1");
    return real != nullptr ? real(context, port_num, index, gid) : -1;
}

int _ibv_query_gid_ex(ibv_context* context, uint32_t port_num, uint32_t gid_index,
                      ibv_gid_entry* entry, uint32_t flags, size_t entry_size) {
    if (ours(context)) {
        if (entry_size < sizeof(ibv_gid_entry)) {
            return EINVAL;
        }
        return tbvdv_query_gid_ex(context, port_num, gid_index, entry, flags);
    }
    TBV_NEXT(_ibv_query_gid_ex, "IBVERBS_1.11");
    return real != nullptr ? real(context, port_num, gid_index, entry, flags, entry_size) : ENOSYS;
}

ssize_t _ibv_query_gid_table(ibv_context* context, ibv_gid_entry* entries, size_t max_entries,
                             uint32_t flags, size_t entry_size) {
    if (ours(context)) {
        if (entry_size < sizeof(ibv_gid_entry)) {
            return -EINVAL;
        }
        return tbvdv_query_gid_table(context, entries, max_entries, flags);
    }
    TBV_NEXT(_ibv_query_gid_table, "IBVERBS_1.11");
    return real != nullptr ? real(context, entries, max_entries, flags, entry_size) : -ENOSYS;
}

int ibv_query_gid_type(ibv_context* context, uint8_t port_num, unsigned int index,
                       ibv_gid_type_sysfs* type) {
    if (ours(context)) {
        ibv_gid_entry e{};
        if (type == nullptr || tbvdv_query_gid_ex(context, port_num, index, &e, 0) != 0) {
            errno = EINVAL;
            return -1;
        }
        // IB and RoCE v1 GIDs share one sysfs type; RoCE v2 is the RoCE-style mode's.
        *type = e.gid_type == IBV_GID_TYPE_ROCE_V2 ? IBV_GID_TYPE_SYSFS_ROCE_V2
                                                   : IBV_GID_TYPE_SYSFS_IB_ROCE_V1;
        return 0;
    }
    TBV_NEXT(ibv_query_gid_type, "IBVERBS_PRIVATE_34");
    return real != nullptr ? real(context, port_num, index, type) : -1;
}

int ibv_query_pkey(ibv_context* context, uint8_t port_num, int index, __be16* pkey) {
    if (ours(context)) {
        return tbvdv_query_pkey(context, port_num, index, pkey);
    }
    TBV_NEXT(ibv_query_pkey, "IBVERBS_1.1");
    return real != nullptr ? real(context, port_num, index, pkey) : -1;
}

int ibv_get_pkey_index(ibv_context* context, uint8_t port_num, __be16 pkey) {
    if (ours(context)) {
        return tbvdv_get_pkey_index(context, port_num, pkey);
    }
    TBV_NEXT(ibv_get_pkey_index, "IBVERBS_1.5");
    return real != nullptr ? real(context, port_num, pkey) : -1;
}

ibv_comp_channel* ibv_create_comp_channel(ibv_context* context) {
    if (ours(context)) {
        return tbvdv_create_comp_channel(context);
    }
    TBV_NEXT(ibv_create_comp_channel, "IBVERBS_1.0");
    return real != nullptr ? real(context) : nullptr;
}

int ibv_destroy_comp_channel(ibv_comp_channel* channel) {
    if (channel != nullptr && ours(channel->context)) {
        return tbvdv_destroy_comp_channel(channel);
    }
    TBV_NEXT(ibv_destroy_comp_channel, "IBVERBS_1.0");
    return real != nullptr ? real(channel) : ENOSYS;
}

ibv_context* ibv_import_device(int cmd_fd) {
    TBV_NEXT(ibv_import_device, "IBVERBS_1.10");
    if (real == nullptr) {
        return nullptr;
    }
    const bool was = t_hide_ours;
    t_hide_ours = true;
    ibv_context* c = real(cmd_fd);
    const int e = errno;
    t_hide_ours = was;
    errno = e;
    return c;
}

}  // extern "C"
