// SPDX-License-Identifier: Apache-2.0
// Our own declarations of the parts of libibverbs' private provider interface that this provider
// uses, in the layout of private ABI 34 (symbol version IBVERBS_PRIVATE_34: rdma-core v34–v56,
// Debian 12, Ubuntu 22.04 and 24.04). rdma-core installs no header for it (driver.h is internal),
// so every provider outside its tree declares these itself. Names keep rdma-core's spelling so
// they can be grepped in libibverbs/driver.h; docs/rdma-core/provider-abi.md §1 lists the layouts
// and what libibverbs does with each member. Sizes and offsets are pinned below and in
// test/provider/pabi34_layout_test.cpp (against the public <infiniband/verbs.h>, and against
// <infiniband/driver.h> where a system installs it).
//
// Only layouts live here. The three private functions are bound at run time by version
// (private_abi.hpp), so that a libibverbs with another private ABI is refused with a message
// instead of a loader error or, worse, a load into the wrong layout.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <infiniband/verbs.h>

namespace tbv::provider::pabi34 {

inline constexpr int kVersion = 34;
inline constexpr const char* kSymbolVersion = "IBVERBS_PRIVATE_34";

/// ccan's struct list_node (two pointers), embedded in verbs_device.
struct list_node {
    list_node* next;
    list_node* prev;
};

struct verbs_match_ent;  // sysfs matching only: never used by a provider without sysfs
struct verbs_sysfs_dev;  // libibverbs-allocated for sysfs devices; ours have none (nullptr)
struct verbs_device;

/// struct verbs_device_ops (driver.h). Only alloc_context and uninit_device matter for devices
/// that are not found in sysfs.
struct verbs_device_ops {
    const char* name;
    std::uint32_t match_min_abi_version;
    std::uint32_t match_max_abi_version;
    const verbs_match_ent* match_table;
    const verbs_device_ops** static_providers;
    bool (*match_device)(verbs_sysfs_dev* sysfs_dev);
    verbs_context* (*alloc_context)(ibv_device* device, int cmd_fd, void* private_data);
    verbs_context* (*import_context)(ibv_device* device, int cmd_fd);
    verbs_device* (*alloc_device)(verbs_sysfs_dev* sysfs_dev);
    void (*uninit_device)(verbs_device* device);
};

/// struct verbs_device (driver.h): allocated by the provider, `device` first. libibverbs takes a
/// reference per context and per device-list entry and calls ops->uninit_device at zero.
struct verbs_device {
    ibv_device device;
    const verbs_device_ops* ops;
    std::atomic<int> refcount;  ///< C11 atomic_int: same size and representation
    list_node entry;            ///< libibverbs' device list (ours are never on it)
    verbs_sysfs_dev* sysfs;     ///< nullptr: no uverbs cdev, no async-fd command (§1.2)
    std::uint64_t core_support;
};

/// IB_UVERBS_CORE_SUPPORT_OPTIONAL_MR_ACCESS (rdma/ib_user_ioctl_verbs.h): ibv_reg_mr passes the
/// optional access bits to the provider instead of stripping them.
inline constexpr std::uint64_t kCoreSupportOptionalMrAccess = 1u << 0;

/// enum ibv_mr_type (driver.h).
enum class ibv_mr_type : int { mr = 0, null_mr = 1, imported_mr = 2, dmabuf_mr = 3 };

/// struct verbs_mr: ibv_dereg_mr reads mr_type through container_of(ibv_mr).
struct verbs_mr {
    ::ibv_mr ibv_mr;
    pabi34::ibv_mr_type mr_type;
    int access;
};

/// enum verbs_qp_mask (driver.h): ibv_qp_to_qp_ex() returns &qp_ex only with VERBS_QP_EX set.
inline constexpr std::uint32_t VERBS_QP_XRCD = 1u << 0;
inline constexpr std::uint32_t VERBS_QP_EX = 1u << 1;

struct verbs_xrcd {
    ibv_xrcd xrcd;
    std::uint32_t comp_mask;
    std::uint32_t handle;
};

struct verbs_qp {
    union {
        ibv_qp qp;
        ibv_qp_ex qp_ex;
    };
    std::uint32_t comp_mask;
    verbs_xrcd* xrcd;
};

struct verbs_cq {
    union {
        ibv_cq cq;
        ibv_cq_ex cq_ex;
    };
};

struct verbs_srq {
    ibv_srq srq;
    ibv_srq_type srq_type;
    verbs_xrcd* xrcd;
    ibv_cq* cq;
    std::uint32_t srq_num;
};

/// struct verbs_context_ops (driver.h), PABI 34: 76 entries in alphabetical order. verbs_set_ops
/// copies every non-null entry; null ones keep libibverbs' dummy (EOPNOTSUPP / ENOSYS).
struct verbs_context_ops {
    int (*advise_mr)(ibv_pd* pd, ibv_advise_mr_advice advice, std::uint32_t flags, ibv_sge* sg_list,
                     std::uint32_t num_sges);
    ibv_dm* (*alloc_dm)(ibv_context* context, ibv_alloc_dm_attr* attr);
    ibv_mw* (*alloc_mw)(ibv_pd* pd, ibv_mw_type type);
    ibv_mr* (*alloc_null_mr)(ibv_pd* pd);
    ibv_pd* (*alloc_parent_domain)(ibv_context* context, ibv_parent_domain_init_attr* attr);
    ibv_pd* (*alloc_pd)(ibv_context* context);
    ibv_td* (*alloc_td)(ibv_context* context, ibv_td_init_attr* init_attr);
    void (*async_event)(ibv_context* context, ibv_async_event* event);
    int (*attach_counters_point_flow)(ibv_counters* counters, ibv_counter_attach_attr* attr,
                                      ibv_flow* flow);
    int (*attach_mcast)(ibv_qp* qp, const ibv_gid* gid, std::uint16_t lid);
    int (*bind_mw)(ibv_qp* qp, ibv_mw* mw, ibv_mw_bind* mw_bind);
    int (*close_xrcd)(ibv_xrcd* xrcd);
    void (*cq_event)(ibv_cq* cq);
    ibv_ah* (*create_ah)(ibv_pd* pd, ibv_ah_attr* attr);
    ibv_counters* (*create_counters)(ibv_context* context, ibv_counters_init_attr* init_attr);
    ibv_cq* (*create_cq)(ibv_context* context, int cqe, ibv_comp_channel* channel, int comp_vector);
    ibv_cq_ex* (*create_cq_ex)(ibv_context* context, ibv_cq_init_attr_ex* init_attr);
    ibv_flow* (*create_flow)(ibv_qp* qp, ibv_flow_attr* flow_attr);
    ibv_flow_action* (*create_flow_action_esp)(ibv_context* context,
                                               ibv_flow_action_esp_attr* attr);
    ibv_qp* (*create_qp)(ibv_pd* pd, ibv_qp_init_attr* attr);
    ibv_qp* (*create_qp_ex)(ibv_context* context, ibv_qp_init_attr_ex* qp_init_attr_ex);
    ibv_rwq_ind_table* (*create_rwq_ind_table)(ibv_context* context,
                                               ibv_rwq_ind_table_init_attr* init_attr);
    ibv_srq* (*create_srq)(ibv_pd* pd, ibv_srq_init_attr* srq_init_attr);
    ibv_srq* (*create_srq_ex)(ibv_context* context, ibv_srq_init_attr_ex* srq_init_attr_ex);
    ibv_wq* (*create_wq)(ibv_context* context, ibv_wq_init_attr* wq_init_attr);
    int (*dealloc_mw)(ibv_mw* mw);
    int (*dealloc_pd)(ibv_pd* pd);
    int (*dealloc_td)(ibv_td* td);
    int (*dereg_mr)(verbs_mr* vmr);
    int (*destroy_ah)(ibv_ah* ah);
    int (*destroy_counters)(ibv_counters* counters);
    int (*destroy_cq)(ibv_cq* cq);
    int (*destroy_flow)(ibv_flow* flow);
    int (*destroy_flow_action)(ibv_flow_action* action);
    int (*destroy_qp)(ibv_qp* qp);
    int (*destroy_rwq_ind_table)(ibv_rwq_ind_table* rwq_ind_table);
    int (*destroy_srq)(ibv_srq* srq);
    int (*destroy_wq)(ibv_wq* wq);
    int (*detach_mcast)(ibv_qp* qp, const ibv_gid* gid, std::uint16_t lid);
    void (*free_context)(ibv_context* context);
    int (*free_dm)(ibv_dm* dm);
    int (*get_srq_num)(ibv_srq* srq, std::uint32_t* srq_num);
    ibv_dm* (*import_dm)(ibv_context* context, std::uint32_t dm_handle);
    ibv_mr* (*import_mr)(ibv_pd* pd, std::uint32_t mr_handle);
    ibv_pd* (*import_pd)(ibv_context* context, std::uint32_t pd_handle);
    int (*modify_cq)(ibv_cq* cq, ibv_modify_cq_attr* attr);
    int (*modify_flow_action_esp)(ibv_flow_action* action, ibv_flow_action_esp_attr* attr);
    int (*modify_qp)(ibv_qp* qp, ibv_qp_attr* attr, int attr_mask);
    int (*modify_qp_rate_limit)(ibv_qp* qp, ibv_qp_rate_limit_attr* attr);
    int (*modify_srq)(ibv_srq* srq, ibv_srq_attr* srq_attr, int srq_attr_mask);
    int (*modify_wq)(ibv_wq* wq, ibv_wq_attr* wq_attr);
    ibv_qp* (*open_qp)(ibv_context* context, ibv_qp_open_attr* attr);
    ibv_xrcd* (*open_xrcd)(ibv_context* context, ibv_xrcd_init_attr* xrcd_init_attr);
    int (*poll_cq)(ibv_cq* cq, int num_entries, ibv_wc* wc);
    int (*post_recv)(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad_wr);
    int (*post_send)(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad_wr);
    int (*post_srq_ops)(ibv_srq* srq, ibv_ops_wr* op, ibv_ops_wr** bad_op);
    int (*post_srq_recv)(ibv_srq* srq, ibv_recv_wr* recv_wr, ibv_recv_wr** bad_recv_wr);
    int (*query_device_ex)(ibv_context* context, const ibv_query_device_ex_input* input,
                           ibv_device_attr_ex* attr, std::size_t attr_size);
    int (*query_ece)(ibv_qp* qp, ibv_ece* ece);
    int (*query_port)(ibv_context* context, std::uint8_t port_num, ibv_port_attr* port_attr);
    int (*query_qp)(ibv_qp* qp, ibv_qp_attr* attr, int attr_mask, ibv_qp_init_attr* init_attr);
    int (*query_qp_data_in_order)(ibv_qp* qp, ibv_wr_opcode op, std::uint32_t flags);
    int (*query_rt_values)(ibv_context* context, ibv_values_ex* values);
    int (*query_srq)(ibv_srq* srq, ibv_srq_attr* srq_attr);
    int (*read_counters)(ibv_counters* counters, std::uint64_t* counters_value,
                         std::uint32_t ncounters, std::uint32_t flags);
    ibv_mr* (*reg_dm_mr)(ibv_pd* pd, ibv_dm* dm, std::uint64_t dm_offset, std::size_t length,
                         unsigned int access);
    ibv_mr* (*reg_dmabuf_mr)(ibv_pd* pd, std::uint64_t offset, std::size_t length,
                             std::uint64_t iova, int fd, int access);
    ibv_mr* (*reg_mr)(ibv_pd* pd, void* addr, std::size_t length, std::uint64_t hca_va, int access);
    int (*req_notify_cq)(ibv_cq* cq, int solicited_only);
    int (*rereg_mr)(verbs_mr* vmr, int flags, ibv_pd* pd, void* addr, std::size_t length,
                    int access);
    int (*resize_cq)(ibv_cq* cq, int cqe);
    int (*set_ece)(ibv_qp* qp, ibv_ece* ece);
    void (*unimport_dm)(ibv_dm* dm);
    void (*unimport_mr)(ibv_mr* mr);
    void (*unimport_pd)(ibv_pd* pd);
};

// ---- the layout, pinned (x86-64 / LP64 sizes; rdma-core v44 driver.h) --------------------------

static_assert(sizeof(void*) == 8, "the PABI-34 layouts below are written for LP64 targets");
static_assert(sizeof(verbs_context_ops) == 76 * sizeof(void*), "PABI 34 has 76 context ops");
static_assert(offsetof(verbs_context_ops, alloc_pd) == 5 * sizeof(void*));
static_assert(offsetof(verbs_context_ops, poll_cq) == 53 * sizeof(void*));
static_assert(offsetof(verbs_context_ops, unimport_pd) == 75 * sizeof(void*));
static_assert(sizeof(std::atomic<int>) == sizeof(int) && alignof(std::atomic<int>) == alignof(int));
static_assert(std::atomic<int>::is_always_lock_free);
static_assert(sizeof(verbs_device_ops) == 9 * 8, "8 pointers and two u32");
static_assert(offsetof(verbs_device_ops, match_table) == 16);
static_assert(offsetof(verbs_device_ops, alloc_context) == 40);
static_assert(offsetof(verbs_device_ops, uninit_device) == 64);
static_assert(offsetof(verbs_device, device) == 0, "libibverbs casts ibv_device* to it");
static_assert(offsetof(verbs_device, ops) == sizeof(ibv_device));
static_assert(offsetof(verbs_device, refcount) == sizeof(ibv_device) + 8);
static_assert(offsetof(verbs_device, entry) == sizeof(ibv_device) + 16);
static_assert(offsetof(verbs_device, sysfs) == sizeof(ibv_device) + 32);
static_assert(offsetof(verbs_device, core_support) == sizeof(ibv_device) + 40);
static_assert(sizeof(verbs_device) == sizeof(ibv_device) + 48);
static_assert(offsetof(verbs_mr, mr_type) == sizeof(ibv_mr));
static_assert(offsetof(verbs_qp, comp_mask) == sizeof(ibv_qp_ex));
// rdma-core v45+ (still PABI 34) grew ibv_qp_ex by one pointer (wr_flush), so ibv_qp_to_qp_ex() of
// such a libibverbs reads comp_mask where v44 has xrcd: a provider that leaves xrcd null (no XRC)
// reads as "no VERBS_QP_EX" on both, which is right while the ibv_wr_* API is not offered.
static_assert(offsetof(verbs_qp, xrcd) == offsetof(verbs_qp, comp_mask) + 8);
static_assert(offsetof(verbs_qp, qp) == 0 && offsetof(verbs_cq, cq) == 0);
static_assert(offsetof(verbs_srq, srq) == 0);

}  // namespace tbv::provider::pabi34
