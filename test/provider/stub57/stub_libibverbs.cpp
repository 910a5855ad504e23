// SPDX-License-Identifier: Apache-2.0
// A stand-in libibverbs.so.1 whose private provider ABI is IBVERBS_PRIVATE_57 (rdma-core v57-v58),
// for the refusal test: the provider must find no IBVERBS_PRIVATE_34 here, say which ABI it found,
// and offer no devices. Nothing in it is ever called.
#include <cstddef>
#include <cstdint>

extern "C" {
void verbs_set_ops(void*, const void*);
void verbs_uninit_context(void*);
void* _verbs_init_and_alloc_context(void*, int, std::size_t, void*, std::uint32_t);

__attribute__((visibility("default"))) void verbs_set_ops(void*, const void*) {}
__attribute__((visibility("default"))) void verbs_uninit_context(void*) {}
__attribute__((visibility("default"))) void* _verbs_init_and_alloc_context(void*, int, std::size_t,
                                                                           void*, std::uint32_t) {
    return nullptr;
}
}
