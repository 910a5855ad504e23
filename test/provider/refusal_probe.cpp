// SPDX-License-Identifier: Apache-2.0
// Loads the provider (TBV_PROVIDER_SO) into a process whose libibverbs.so.1 is whatever the loader
// finds (the refusal test points LD_LIBRARY_PATH at a PABI-57 stand-in) and asks for its devices.
// Prints "devices=N" or "refused errno=E", exits 0 when it could ask at all.
#include <dlfcn.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

int main() {
    const char* so = std::getenv("TBV_PROVIDER_SO");
    void* h = so != nullptr ? ::dlopen(so, RTLD_NOW) : nullptr;
    if (h == nullptr) {
        std::printf("cannot load the provider: %s\n", ::dlerror());
        return 1;
    }
    using List = void** (*)(int*);
    auto list = reinterpret_cast<List>(::dlsym(h, "tbvdv_get_device_list"));
    if (list == nullptr) {
        std::printf("no tbvdv_get_device_list\n");
        return 1;
    }
    int n = -1;
    errno = 0;
    void** l = list(&n);
    if (l == nullptr) {
        std::printf("refused errno=%d\n", errno);
    } else {
        std::printf("devices=%d\n", n);
        std::free(l);
    }
    std::fflush(stdout);
    return 0;
}
