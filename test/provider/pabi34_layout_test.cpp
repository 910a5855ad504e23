// SPDX-License-Identifier: Apache-2.0
// Our PABI-34 declarations (rdma_provider/pabi34.hpp) against what can be checked here. Debian and
// Ubuntu do not install libibverbs' private <infiniband/driver.h>; where a system does (an
// rdma-core built from source), every size and offset is compared with it. Everywhere, the public
// structs our layouts embed or are embedded in are checked against <infiniband/verbs.h>.
#include <cstddef>

#include <infiniband/verbs.h>

#include "catch.hpp"
#include "pabi34.hpp"
#include "provider.hpp"

namespace p34 = tbv::provider::pabi34;

// ---- against the public header --------------------------------------------------------------

// The provider finds its context from the ibv_context libibverbs hands out: verbs_context must end
// with it, and our shell must start with verbs_context.
static_assert(offsetof(verbs_context, context) + sizeof(ibv_context) == sizeof(verbs_context));
static_assert(offsetof(tbv::provider::ContextShell, vctx) == 0);
// Objects libibverbs casts: the public struct first.
static_assert(offsetof(p34::verbs_device, device) == 0);
static_assert(offsetof(p34::verbs_mr, ibv_mr) == 0);
static_assert(offsetof(p34::verbs_qp, qp) == 0 && offsetof(p34::verbs_qp, qp_ex) == 0);
static_assert(offsetof(ibv_qp_ex, qp_base) == 0);
static_assert(offsetof(p34::verbs_cq, cq) == 0 && offsetof(p34::verbs_cq, cq_ex) == 0);
static_assert(offsetof(p34::verbs_srq, srq) == 0);
// The ops are plain function pointers, 76 of them in PABI 34.
static_assert(sizeof(p34::verbs_context_ops) == 76 * sizeof(void (*)()));

// ---- against libibverbs' private header, where installed -------------------------------------

// meson defines TBV_HAVE_DRIVER_H when the header is installed and compiles as C++.
#if defined(TBV_HAVE_DRIVER_H) && TBV_HAVE_DRIVER_H
#include <infiniband/driver.h>
#if defined(IBVERBS_PABI_VERSION)
static_assert(IBVERBS_PABI_VERSION == p34::kVersion, "installed driver.h is another PABI");
#endif
static_assert(sizeof(::verbs_context_ops) == sizeof(p34::verbs_context_ops));
static_assert(offsetof(::verbs_context_ops, alloc_pd) ==
              offsetof(p34::verbs_context_ops, alloc_pd));
static_assert(offsetof(::verbs_context_ops, poll_cq) == offsetof(p34::verbs_context_ops, poll_cq));
static_assert(offsetof(::verbs_context_ops, post_send) ==
              offsetof(p34::verbs_context_ops, post_send));
static_assert(offsetof(::verbs_context_ops, query_device_ex) ==
              offsetof(p34::verbs_context_ops, query_device_ex));
static_assert(offsetof(::verbs_context_ops, unimport_pd) ==
              offsetof(p34::verbs_context_ops, unimport_pd));
static_assert(sizeof(::verbs_device_ops) == sizeof(p34::verbs_device_ops));
static_assert(offsetof(::verbs_device_ops, alloc_context) ==
              offsetof(p34::verbs_device_ops, alloc_context));
static_assert(offsetof(::verbs_device_ops, uninit_device) ==
              offsetof(p34::verbs_device_ops, uninit_device));
static_assert(sizeof(::verbs_device) == sizeof(p34::verbs_device));
static_assert(offsetof(::verbs_device, ops) == offsetof(p34::verbs_device, ops));
static_assert(offsetof(::verbs_device, sysfs) == offsetof(p34::verbs_device, sysfs));
static_assert(offsetof(::verbs_device, core_support) == offsetof(p34::verbs_device, core_support));
static_assert(sizeof(::verbs_mr) == sizeof(p34::verbs_mr));
static_assert(offsetof(::verbs_mr, mr_type) == offsetof(p34::verbs_mr, mr_type));
static_assert(sizeof(::verbs_qp) == sizeof(p34::verbs_qp));
static_assert(offsetof(::verbs_qp, comp_mask) == offsetof(p34::verbs_qp, comp_mask));
static_assert(sizeof(::verbs_srq) == sizeof(p34::verbs_srq));
#else
#undef TBV_HAVE_DRIVER_H
#define TBV_HAVE_DRIVER_H 0
#endif

TEST_CASE("PABI-34 declarations: checked against the installed headers", "[provider][abi]") {
    // Everything above is compile-time; this records which headers the build checked against.
    INFO("<infiniband/driver.h> installed: " << (TBV_HAVE_DRIVER_H ? "yes" : "no"));
    CHECK(p34::kVersion == 34);
    CHECK(sizeof(p34::verbs_device) == sizeof(ibv_device) + 48);
}
