// SPDX-License-Identifier: Apache-2.0
// The three libibverbs functions of the private provider ABI this provider calls, bound at run time
// by symbol version (dlvsym "IBVERBS_PRIVATE_34") instead of at link time. A libibverbs with
// another private ABI then yields a clear refusal — no tbv devices, one message on stderr naming
// the ABI found — rather than the loader's "version not found" abort of every program the
// interposer is preloaded into, and never a provider running against the wrong layouts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <infiniband/verbs.h>

#include "pabi34.hpp"

namespace tbv::provider {

struct PrivateAbi {
    /// _verbs_init_and_alloc_context: calloc(alloc_size), set up the verbs_context found at
    /// `context_offset` bytes into it (a pointer-typed offset, as driver.h's macro passes it).
    void* (*init_and_alloc_context)(ibv_device* device, int cmd_fd, std::size_t alloc_size,
                                    verbs_context* context_offset, std::uint32_t driver_id);
    void (*set_ops)(verbs_context* vctx, const pabi34::verbs_context_ops* ops);
    void (*uninit_context)(verbs_context* vctx);
};

/// The bound functions, or nullptr when the running libibverbs lacks IBVERBS_PRIVATE_34 (then
/// refusal() says why, and the refusal has been printed once to stderr unless TBV_QUIET is set).
const PrivateAbi* private_abi() noexcept;

/// Why private_abi() is nullptr ("" when it is not).
const std::string& refusal() noexcept;

}  // namespace tbv::provider
