/* SPDX-License-Identifier: Apache-2.0 */
/* tbverbs direct-verbs entry points: for applications that link the tbverbs provider
 * (libtbverbs-rdmav34.so) instead of having the interposer preloaded (tbv run).
 *
 * libibverbs only lists devices it finds in sysfs, and tbverbs devices have no kernel node: get
 * them here, then use them with the ordinary verbs (ibv_open_device, ibv_alloc_pd, ...). A few
 * public verbs go to sysfs or the kernel for any device and fail for ours (GID and P_Key queries,
 * the node GUID, completion channels): their tbvdv_ twins below answer for tbverbs contexts. */
#ifndef TBVDV_H
#define TBVDV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <infiniband/verbs.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TBVDV_API __attribute__((visibility("default")))
#else
#define TBVDV_API
#endif

/* The tbverbs devices (tbv0, tbv1, ...): emulated hosts named by TBV_EMU=<cable>[/a|/b]. A
 * NULL-terminated array to free with ibv_free_device_list(); *num_devices (if not NULL) is its
 * length. NULL with errno EPROTONOSUPPORT when the libibverbs in this process has a private
 * provider ABI this build does not support (a message on stderr says which), ENOMEM. */
TBVDV_API struct ibv_device** tbvdv_get_device_list(int* num_devices);

/* 1 if the device belongs to tbverbs, else 0. */
TBVDV_API int tbvdv_is_tbv_device(struct ibv_device* device);

/* ibv_get_device_guid, ibv_query_gid, ibv_query_gid_ex, ibv_query_gid_table, ibv_query_pkey,
 * ibv_get_pkey_index, ibv_create_comp_channel and ibv_destroy_comp_channel for tbverbs devices and
 * contexts, with the same arguments and results (EINVAL or -1 for another device's). */
TBVDV_API __be64 tbvdv_get_device_guid(struct ibv_device* device);
TBVDV_API int tbvdv_query_gid(struct ibv_context* context, uint8_t port_num, int index,
                              union ibv_gid* gid);
TBVDV_API int tbvdv_query_gid_ex(struct ibv_context* context, uint32_t port_num, uint32_t gid_index,
                                 struct ibv_gid_entry* entry, uint32_t flags);
TBVDV_API ssize_t tbvdv_query_gid_table(struct ibv_context* context, struct ibv_gid_entry* entries,
                                        size_t max_entries, uint32_t flags);
TBVDV_API int tbvdv_query_pkey(struct ibv_context* context, uint8_t port_num, int index,
                               __be16* pkey);
TBVDV_API int tbvdv_get_pkey_index(struct ibv_context* context, uint8_t port_num, __be16 pkey);
TBVDV_API struct ibv_comp_channel* tbvdv_create_comp_channel(struct ibv_context* context);
TBVDV_API int tbvdv_destroy_comp_channel(struct ibv_comp_channel* channel);

#ifdef __cplusplus
}
#endif

#endif /* TBVDV_H */
