// SPDX-License-Identifier: Apache-2.0
#include "private_abi.hpp"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace tbv::provider {

namespace {

struct Binding {
    PrivateAbi abi{};
    bool ok = false;
    std::string why;
};

/// The IBVERBS_PRIVATE_<n> node the loaded libibverbs has, or 0 (for the refusal message).
int find_private_version(void* lib) {
    for (int n = 1; n < 200; ++n) {
        const std::string v = "IBVERBS_PRIVATE_" + std::to_string(n);
        if (::dlvsym(lib, "verbs_set_ops", v.c_str()) != nullptr) {
            return n;
        }
    }
    return 0;
}

Binding bind() {
    Binding b;
    // Whoever calls us has libibverbs loaded; this takes a reference we keep (the provider's
    // context ops run inside libibverbs' calls for as long as the process lives).
    void* lib = ::dlopen("libibverbs.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (lib == nullptr) {
        b.why = std::string("tbverbs: cannot load libibverbs.so.1: ") + ::dlerror();
        return b;
    }
    const char* v = pabi34::kSymbolVersion;
    b.abi.init_and_alloc_context = reinterpret_cast<decltype(b.abi.init_and_alloc_context)>(
        ::dlvsym(lib, "_verbs_init_and_alloc_context", v));
    b.abi.set_ops = reinterpret_cast<decltype(b.abi.set_ops)>(::dlvsym(lib, "verbs_set_ops", v));
    b.abi.uninit_context =
        reinterpret_cast<decltype(b.abi.uninit_context)>(::dlvsym(lib, "verbs_uninit_context", v));
    b.ok = b.abi.init_and_alloc_context != nullptr && b.abi.set_ops != nullptr &&
           b.abi.uninit_context != nullptr;
    if (!b.ok) {
        const int found = find_private_version(lib);
        b.why = "tbverbs: the libibverbs in this process has " +
                (found != 0 ? "private provider ABI IBVERBS_PRIVATE_" + std::to_string(found)
                            : std::string("no private provider ABI tbverbs knows")) +
                "; this provider was built for IBVERBS_PRIVATE_" +
                std::to_string(pabi34::kVersion) +
                " (rdma-core v34-v56). No tbv devices: rebuild tbverbs against this rdma-core.";
    }
    return b;
}

const Binding& binding() {
    static const Binding b = [] {
        Binding r = bind();
        const char* quiet = std::getenv("TBV_QUIET");
        if (!r.ok && (quiet == nullptr || *quiet == '\0' || *quiet == '0')) {
            std::fprintf(stderr, "%s\n", r.why.c_str());
        }
        return r;
    }();
    return b;
}

}  // namespace

const PrivateAbi* private_abi() noexcept {
    const Binding& b = binding();
    return b.ok ? &b.abi : nullptr;
}

const std::string& refusal() noexcept {
    return binding().why;
}

}  // namespace tbv::provider
